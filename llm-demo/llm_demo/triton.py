"""Where the `tritonserver` binary lives, its backend directory, its command line.

Three installs are recognised, in this order:

1. an explicit directory (argument or `LLM_DEMO_TRITON_HOME`) laid out like
   `/opt/tritonserver` (`bin/tritonserver`, `backends/python/`);
2. the PyPI wheel `nvidia-pytriton` (0.7.0 ships server 2.51.0), whose
   `pytriton/tritonserver/` holds the binary, the Python backend and one Python
   backend stub per Python minor version, with its shared libraries in
   `site-packages/nvidia_pytriton.libs`;
3. the NGC container layout `/opt/tritonserver`.

The wheel's backend is not usable in place: `prepare_backend_dir` copies
`backends/python` and the stub matching the Python that will run the models into
a directory passed as `--backend-directory`.
Failure mode: no install found or no stub for this Python raises
`LaunchError` (exit code 7) and the remediation.

NumPy 2 and the Triton 2.51 stub: the wheel's Python backend stub is built with a pybind11 older
than 2.12, which reads `itemsize` from the NumPy 1.x layout of `PyArray_Descr`; under NumPy 2 it
reads 0, so every tensor the stub hands to the model is its first element repeated (BYTES: the
first byte of the length prefix, e.g. "unpack_from requires a buffer of at least 252645139 bytes"
for a 15-byte prompt) and every output tensor leaves the stub with 0 bytes. The data is lost
inside the stub before `triton_python_backend_utils` sees it, so no Python shim can repair it:
the stub's Python must import NumPy 1.x. The stub runs its embedded Python in isolated mode
(PYTHONPATH and other PYTHON* variables are ignored) and takes the interpreter, so its
site-packages, from the first `python3` on PATH. Hence `STUB_SITE_ENV`: a folder holding NumPy
1.x (`pip install --target DIR numpy==1.26.4`); `prepare_stub_python` makes a venv for the stub
only that imports that folder before this interpreter's site-packages, and `server_env` puts its
`bin` first on PATH. The serving interpreter, clients and tools keep the host's NumPy 2.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import site
import sys
import sysconfig
import venv
from dataclasses import dataclass, field
from pathlib import Path

from .errors import LaunchError

NGC_HOME = Path("/opt/tritonserver")
#: Environment variable: a folder with NumPy 1.x that only the Python backend stub imports
#: (module docstring); unset, the stub uses this interpreter's packages as they are.
STUB_SITE_ENV = "LLM_DEMO_STUB_SITE"


@dataclass(frozen=True)
class TritonInstall:
    """Paths of one Triton install; `stubs` is None where the backend ships its stub."""

    binary: Path
    python_backend: Path
    stubs: Path | None
    libs: Path | None


@dataclass(frozen=True)
class TlsOptions:
    """gRPC TLS files (PEM). `root_cert` is needed for mutual TLS and by clients."""

    cert: Path
    key: Path
    root_cert: Path | None = None
    mutual: bool = False

    def files(self) -> list[Path]:
        return [self.cert, self.key] + ([self.root_cert] if self.root_cert else [])


@dataclass
class ServeOptions:
    """Everything `tritonserver` is started with. Ports are TCP ports; times in seconds.

    `max_lifetime_s` runs the server under coreutils `timeout` (SIGTERM, SIGKILL 10 s later), so a
    server whose owner died without tearing it down (a killed test run) still stops by itself.
    """

    model_repository: Path
    http_address: str = "127.0.0.1"
    http_port: int = 8000
    grpc_address: str = "127.0.0.1"
    grpc_port: int = 8001
    metrics_address: str = "127.0.0.1"
    metrics_port: int = 8002
    model_control_mode: str = "explicit"
    load_models: tuple[str, ...] = ("*",)
    strict_readiness: bool = True
    exit_timeout_s: int = 10
    tls: TlsOptions | None = None
    log_verbose: int = 0
    max_lifetime_s: float | None = None
    extra_args: list[str] = field(default_factory=list)

    def endpoints(self) -> list[tuple[str, str, int]]:
        """(name, address, port) of the three listeners."""
        return [
            ("http", self.http_address, self.http_port),
            ("grpc", self.grpc_address, self.grpc_port),
            ("metrics", self.metrics_address, self.metrics_port),
        ]


def _from_home(home: Path) -> TritonInstall | None:
    binary = home / "bin" / "tritonserver"
    backend = home / "backends" / "python"
    if not binary.is_file() or not backend.is_dir():
        return None
    stubs = home / "python_backend_stubs"
    libs = home.parent.parent / "nvidia_pytriton.libs"
    return TritonInstall(
        binary=binary,
        python_backend=backend,
        stubs=stubs if stubs.is_dir() else None,
        libs=libs if libs.is_dir() else None,
    )


def locate_triton(home: Path | None = None) -> TritonInstall:
    """Find a Triton install (see module docstring); raise LaunchError(7) if none."""
    candidates: list[Path] = []
    if home is not None:
        candidates.append(Path(home))
    elif os.environ.get("LLM_DEMO_TRITON_HOME"):
        candidates.append(Path(os.environ["LLM_DEMO_TRITON_HOME"]))
    else:
        spec = importlib.util.find_spec("pytriton")
        if spec is not None and spec.origin:
            candidates.append(Path(spec.origin).parent / "tritonserver")
        candidates.append(NGC_HOME)
    for cand in candidates:
        found = _from_home(cand)
        if found is not None:
            return found
    raise LaunchError(
        f"no tritonserver found (looked in: {', '.join(map(str, candidates))})",
        remediation=(
            "install the server with `pip install nvidia-pytriton==0.7.0` (CPU-capable Triton 2.51), "
            "set LLM_DEMO_TRITON_HOME to a directory holding bin/tritonserver and backends/python, "
            "or use docker-compose.yml with the NGC tritonserver image; see docs/usage.md"
        ),
    )


def prepare_backend_dir(install: TritonInstall, dest: Path, python_version: tuple[int, int] | None = None) -> Path:
    """Return a `--backend-directory` holding the Python backend and its stub.

    For the wheel, copies `backends/python` and the stub for `python_version`
    (default: this interpreter's) into `dest/python/`; an install without a
    stubs folder ships its stub in place, so its own `backends/` is returned.
    """
    if install.stubs is None:
        return install.python_backend.parent
    major, minor = python_version or sys.version_info[:2]
    stub = install.stubs / f"{major}.{minor}" / "triton_python_backend_stub"
    if not stub.is_file():
        shipped = sorted(p.name for p in install.stubs.iterdir())
        raise LaunchError(
            f"the Triton wheel has no Python backend stub for Python {major}.{minor}",
            remediation=f"run the models with one of the shipped Pythons: {', '.join(shipped)}",
        )
    target = dest / "python"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(install.python_backend, target, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(stub, target / "triton_python_backend_stub")
    return dest


def prepare_stub_python(stub_site: Path, dest: Path) -> Path:
    """Create, anew, a venv at `dest` (without pip, on this interpreter's base Python) whose
    site-packages holds one `.pth` file: `stub_site` first, then every site-packages folder of
    this interpreter (through `site.addsitedir`, so their own `.pth` files apply). Return its `bin`
    folder, to put first on the server's PATH (`server_env(stub_bin=...)`).
    Failure mode: `stub_site` not a folder raises LaunchError (exit code 7)."""
    if not Path(stub_site).is_dir():
        raise LaunchError(
            f"{STUB_SITE_ENV}={stub_site} is not a folder",
            remediation=(
                "point it at a `pip install --target DIR numpy==1.26.4` (scripts/gpu_bundle.sh carries one), "
                "or unset it"
            ),
        )
    if dest.exists():
        shutil.rmtree(dest)
    venv.EnvBuilder(with_pip=False, symlinks=True).create(dest)
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(dest), "platbase": str(dest)}))
    lines = [str(Path(stub_site).resolve())] + [f"import site; site.addsitedir({d!r})" for d in site.getsitepackages()]
    (purelib / "llm_demo_stub_site.pth").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dest / "bin"


def server_command(install: TritonInstall, backend_dir: Path, opts: ServeOptions) -> list[str]:
    """The argv that starts `tritonserver` with `opts`."""
    cmd = [
        str(install.binary),
        f"--model-repository={opts.model_repository}",
        f"--backend-directory={backend_dir}",
        f"--http-address={opts.http_address}",
        f"--http-port={opts.http_port}",
        f"--grpc-address={opts.grpc_address}",
        f"--grpc-port={opts.grpc_port}",
        f"--metrics-address={opts.metrics_address}",
        f"--metrics-port={opts.metrics_port}",
        "--allow-metrics=true",
        f"--model-control-mode={opts.model_control_mode}",
        f"--strict-readiness={'true' if opts.strict_readiness else 'false'}",
        f"--exit-timeout-secs={opts.exit_timeout_s}",
        f"--log-verbose={opts.log_verbose}",
    ]
    if opts.model_control_mode == "explicit":
        cmd += [f"--load-model={name}" for name in opts.load_models]
    if opts.tls is not None:
        cmd += ["--grpc-use-ssl=true", f"--grpc-server-cert={opts.tls.cert}", f"--grpc-server-key={opts.tls.key}"]
        if opts.tls.root_cert is not None:
            cmd.append(f"--grpc-root-cert={opts.tls.root_cert}")
        if opts.tls.mutual:
            cmd.append("--grpc-use-ssl-mutual=true")
    cmd += list(opts.extra_args)
    if opts.max_lifetime_s:
        cmd = ["timeout", "--kill-after=10", str(int(opts.max_lifetime_s))] + cmd
    return cmd


def libpython_dir() -> Path | None:
    """Directory holding this interpreter's shared libpython, or None (static build).

    Looks in sysconfig's LIBDIR, then `<base prefix>/lib` (relocated builds such
    as uv's standalone Pythons report their build-time LIBDIR).
    """
    names = [
        n for n in (sysconfig.get_config_var("INSTSONAME"), sysconfig.get_config_var("LDLIBRARY")) if n and ".so" in n
    ]
    for folder in (sysconfig.get_config_var("LIBDIR"), str(Path(sys.base_prefix) / "lib")):
        if folder and any((Path(folder) / name).exists() for name in names):
            return Path(folder)
    return None


def server_env(
    install: TritonInstall, base: dict[str, str] | None = None, stub_bin: Path | None = None
) -> dict[str, str]:
    """Environment for the server: `stub_bin` (from `prepare_stub_python`), else this venv's
    `bin`, first on PATH (the Python backend stub finds its interpreter, and so
    torch/transformers, through PATH), then on LD_LIBRARY_PATH this interpreter's own
    `libpython` directory (the stub must embed the same patch release as the stdlib it loads,
    not a system copy) and the wheel's shared libraries."""
    env = dict(os.environ if base is None else base)
    env["PATH"] = os.pathsep.join([str(stub_bin or Path(sys.executable).parent), env.get("PATH", "")])
    libdirs = [str(d) for d in [libpython_dir()] if d is not None]
    if install.libs is not None:
        libdirs.append(str(install.libs))
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in [*libdirs, env.get("LD_LIBRARY_PATH", "")] if p)
    return env
