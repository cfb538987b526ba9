"""The amdsmi guard: a broken `amdsmi` must not crash Ray once llem_ray is imported.

Each case runs in a fresh interpreter, because the guard changes `sys.path` and `PYTHONPATH`. The
broken `amdsmi` is the real one when the `zeus` extra is installed (CI installs it), else a stand-in
that fails the same way (`KeyError: 'libamd_smi.so'` on import).
"""

from __future__ import annotations

import importlib.machinery
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llem_ray.energy import amd_guard

REAL_AMDSMI = (
    importlib.machinery.PathFinder.find_spec("amdsmi", [p for p in sys.path if p != str(amd_guard.SHIM_DIR)])
    is not None
)
"""True when the real amdsmi (the zeus extra) is installed; the guard's stand-in is looked past."""


def _run(code: str, extra_path: Path | None = None, timeout_s: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if extra_path is not None:
        env["PYTHONPATH"] = str(extra_path)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout_s,
        cwd=Path(__file__).resolve().parents[2],
    )


@pytest.fixture
def broken_amdsmi(tmp_path: Path) -> Path | None:
    """A directory to put on PYTHONPATH so `import amdsmi` fails like on a non-AMD host (None: the real one does)."""
    if REAL_AMDSMI:
        return None
    pkg = tmp_path / "amdsmi"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("_libraries = {}\nfunc = _libraries['libamd_smi.so']\n")
    return tmp_path


def test_without_guard_broken_amdsmi_breaks_rays_amd_probe(broken_amdsmi):
    out = _run(
        """
        from ray._private.accelerators import AMDGPUAcceleratorManager
        AMDGPUAcceleratorManager.get_current_node_num_accelerators()
    """,
        broken_amdsmi,
    )
    assert out.returncode != 0
    assert "KeyError" in out.stderr and "libamd_smi.so" in out.stderr


def test_guard_turns_broken_amdsmi_into_import_error(broken_amdsmi):
    out = _run(
        """
        import os, sys
        import llem_ray
        from llem_ray.energy.amd_guard import SHIM_DIR
        assert sys.path[0] == str(SHIM_DIR) and os.environ["PYTHONPATH"].split(os.pathsep)[0] == str(SHIM_DIR)
        try:
            import amdsmi
        except ImportError as exc:
            print("import-error:", exc)
        assert "amdsmi" not in sys.modules
        from ray._private.accelerators import AMDGPUAcceleratorManager
        print("amd-gpus:", AMDGPUAcceleratorManager.get_current_node_num_accelerators())
    """,
        broken_amdsmi,
    )
    assert out.returncode == 0, out.stderr
    assert "import-error: amdsmi is installed but unusable here (KeyError: 'libamd_smi.so')" in out.stdout
    assert "amd-gpus: 0" in out.stdout


def test_guard_returns_a_working_amdsmi_unchanged(tmp_path):
    pkg = tmp_path / "amdsmi"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .sub import VALUE\n")
    (pkg / "sub.py").write_text("VALUE = 42\n")
    out = _run(
        """
        import llem_ray, amdsmi, amdsmi.sub
        print(amdsmi.VALUE, amdsmi.__file__, amdsmi.sub.__file__)
    """,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    value, init_file, sub_file = out.stdout.split()
    assert value == "42"
    assert Path(init_file) == pkg / "__init__.py" and Path(sub_file) == pkg / "sub.py"


def test_shim_without_any_amdsmi_is_a_plain_module_not_found():
    out = _run(f"""
        import sys
        sys.path = [{str(amd_guard.SHIM_DIR)!r}] + [p for p in sys.path if "-packages" not in p]
        try:
            import amdsmi
        except ModuleNotFoundError as exc:
            print("not-found:", exc.name, "amdsmi" in sys.modules)
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "not-found: amdsmi False"


def test_install_is_idempotent(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    monkeypatch.setattr(sys, "path", ["/first", *(p for p in sys.path if p != str(amd_guard.SHIM_DIR))])
    amd_guard.install()
    amd_guard.install()
    assert sys.path.count(str(amd_guard.SHIM_DIR)) == 1 and sys.path[0] == str(amd_guard.SHIM_DIR)
    assert os.environ["PYTHONPATH"] == os.pathsep.join([str(amd_guard.SHIM_DIR), "/somewhere"])


@pytest.mark.ray
def test_ray_init_fails_without_guard_and_works_through_llem_ray(broken_amdsmi):
    """The real trap and the real fix: driver, raylet children and a worker that imports zeus."""
    plain = _run(
        """
        import ray
        ray.init(address="local", num_cpus=1, include_dashboard=False)
    """,
        broken_amdsmi,
    )
    assert plain.returncode != 0 and "libamd_smi.so" in plain.stderr
    guarded = _run(
        """
        import llem_ray
        import ray
        ray.init(address="local", num_cpus=1, include_dashboard=False)

        @ray.remote
        def probe():
            import importlib.util, os
            if importlib.util.find_spec("zeus") is not None:
                import zeus.device.gpu  # imports amdsmi inside the worker
            return os.environ["PYTHONPATH"]

        print("worker-pythonpath:", ray.get(probe.remote(), timeout=90))
        ray.shutdown()
    """,
        broken_amdsmi,
        timeout_s=180,
    )
    assert guarded.returncode == 0, guarded.stderr[-3000:]
    assert f"worker-pythonpath: {amd_guard.SHIM_DIR}" in guarded.stdout
