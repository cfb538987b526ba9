"""Version strings: comparison against simple specs, installed package versions, tooling manifest.

Specs are comma-separated clauses ``<op><version>`` with ``op`` in ``>= <= > < == !=`` (``==1.2.*``
matches by prefix), e.g. ``">=1.2,<1.3"``. Versions compare by their leading numeric components
(``"1.2.1rc3"`` -> ``(1, 2, 1)``).

``cuda_runtime_version()`` and ``cudnn_version()`` ask the shared libraries a build would load
(``libcudart``, ``libcudnn``, found like the dynamic linker finds them) for their versions; each is None
where the library is not installed or not loadable (a host without the CUDA toolkit or cuDNN).

``write_tooling_manifest(workspace)`` writes ``state/tooling-manifest.json``: the versions of
llm-demo, Python and every package/tool the tool uses (seed 000: isolation manifest).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import re
import sys
from importlib import metadata
from pathlib import Path

from . import __version__
from .paths import Workspace, iso, utc_now, write_json_atomic

#: Distributions whose versions go into the tooling manifest.
TOOLING_PACKAGES = (
    "pyyaml",
    "typer",
    "huggingface_hub",
    "nvidia-ml-py",
    "tritonclient",
    "nvidia-pytriton",
    "transformers",
    "tokenizers",
    "torch",
    "tensorrt",
    "tensorrt_llm",
)


def version_tuple(text: str) -> tuple[int, ...]:
    """Leading numeric components of a version; ``ValueError`` if it does not start with a digit."""
    parts = []
    for piece in str(text).strip().split("."):
        m = re.match(r"\d+", piece)
        if not m:
            break
        parts.append(int(m.group()))
        if m.end() != len(piece):
            break
    if not parts:
        raise ValueError(f"not a version: {text!r}")
    return tuple(parts)


def _cmp(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    width = max(len(a), len(b))
    a2, b2 = a + (0,) * (width - len(a)), b + (0,) * (width - len(b))
    return (a2 > b2) - (a2 < b2)


def spec_matches(version: str, spec: str) -> bool:
    """True if ``version`` satisfies every clause of ``spec`` (see module docstring)."""
    have = version_tuple(version)
    for clause in filter(None, (c.strip() for c in spec.split(","))):
        m = re.fullmatch(r"(>=|<=|==|!=|>|<)\s*(\S+)", clause)
        if not m:
            raise ValueError(f"bad version clause {clause!r} in {spec!r}")
        op, target = m.groups()
        if op == "==" and target.endswith(".*"):
            prefix = version_tuple(target[:-2])
            if have[: len(prefix)] != prefix:
                return False
            continue
        c = _cmp(have, version_tuple(target))
        ok = {">=": c >= 0, "<=": c <= 0, ">": c > 0, "<": c < 0, "==": c == 0, "!=": c != 0}[op]
        if not ok:
            return False
    return True


def at_least(version: str, minimum: str) -> bool:
    """True if ``version >= minimum`` by numeric components."""
    return _cmp(version_tuple(version), version_tuple(minimum)) >= 0


def package_version(name: str) -> str | None:
    """Installed version of a distribution, or None when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _library_version(name: str, symbol: str, out_param: bool) -> int | None:
    """Call `symbol` of shared library `name` (``cudart``...) for an integer version; None if absent."""
    for soname in filter(None, (ctypes.util.find_library(name), f"lib{name}.so")):
        try:
            fn = getattr(ctypes.CDLL(soname), symbol)
        except (OSError, AttributeError):
            continue
        if not out_param:
            fn.restype = ctypes.c_size_t
            return int(fn())
        value = ctypes.c_int(0)
        return value.value if fn(ctypes.byref(value)) == 0 else None
    return None


def cuda_version_text(number: int) -> str:
    """CUDA's integer version (1000 * major + 10 * minor, e.g. 13010) as ``"13.1"``."""
    return f"{number // 1000}.{(number % 1000) // 10}"


def cudnn_version_text(number: int) -> str:
    """cuDNN's integer version as ``"major.minor.patch"``: 9.x counts major * 10000 + minor * 100 + patch
    (90100 = 9.1.0), 8.x and older major * 1000 + minor * 100 + patch (8907 = 8.9.7)."""
    major, rest = divmod(number, 10000) if number >= 90000 else divmod(number, 1000)
    return f"{major}.{rest // 100}.{rest % 100}"


def cuda_runtime_version() -> str | None:
    """Version of the CUDA runtime library (``cudaRuntimeGetVersion``), or None; no GPU needed."""
    number = _library_version("cudart", "cudaRuntimeGetVersion", out_param=True)
    return cuda_version_text(number) if number else None


def cudnn_version() -> str | None:
    """Version of the cuDNN library (``cudnnGetVersion``), or None."""
    number = _library_version("cudnn", "cudnnGetVersion", out_param=False)
    return cudnn_version_text(number) if number else None


def tooling_versions() -> dict[str, str | None]:
    """Versions of llm-demo, Python and :data:`TOOLING_PACKAGES` (None: not installed)."""
    versions: dict[str, str | None] = {"llm-demo": __version__, "python": platform.python_version()}
    versions.update({name: package_version(name) for name in TOOLING_PACKAGES})
    return versions


def write_tooling_manifest(workspace: Workspace) -> Path:
    """Write ``state/tooling-manifest.json`` and return its path (``OSError`` if not writable)."""
    data = {
        "written_at": iso(utc_now()),
        "llm_demo_root": str(workspace.root),
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "versions": tooling_versions(),
    }
    return write_json_atomic(workspace.state_file("tooling-manifest.json"), data)
