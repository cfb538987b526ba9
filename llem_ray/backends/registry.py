"""Backends by name (INF-10): each a `BackendSpec`, built-ins from their packages, plugins registered.

A plugin (or test double) registers a spec under its own name with `register`; from then on its name
is a valid `backend:`, its section validates like a built-in's, and `create` builds it. Built-in
specs live in `llem_ray/backends/<name>/__init__.py`; importing one imports pydantic only, never
torch, vllm or tensorrt_llm (the implementation is imported by `create`).
"""

from __future__ import annotations

import importlib.util

from llem_ray.backends.protocol import InferenceBackend
from llem_ray.backends.spec import BackendSpec
from llem_ray.errors import BackendError
from llem_ray.registry import Registry

BACKENDS: Registry[BackendSpec] = Registry(
    {
        "pytorch": "llem_ray.backends.pytorch:SPEC",
        "vllm": "llem_ray.backends.vllm:SPEC",
        "tensorrt": "llem_ray.backends.tensorrt:SPEC",
    }
)


def register(spec: BackendSpec) -> None:
    """Make `spec` the backend called `spec.name` (overrides a built-in of the same name)."""
    BACKENDS.register(spec.name, spec)


def unregister(name: str) -> None:
    """Forget a registered backend (a built-in of that name comes back)."""
    BACKENDS.unregister(name)


def names() -> list[str]:
    """Every backend name: built-ins first, then those registered (plugins loaded first)."""
    return BACKENDS.names()


def find(name: str) -> BackendSpec | None:
    """The spec of `name`, or None if no backend has that name."""
    try:
        return BACKENDS.get(name)
    except KeyError:
        return None


def spec(name: str) -> BackendSpec:
    """The spec of `name`. Raises BackendError naming the registered backends if there is none."""
    found = find(name)
    if found is None:
        raise BackendError(f"unknown backend '{name}' (known: {', '.join(sorted(names()))})")
    return found


def specs() -> list[BackendSpec]:
    """Every backend's spec, in `names()` order."""
    return [BACKENDS.get(name) for name in names()]


def builtin_specs() -> list[BackendSpec]:
    """The built-in backends' specs (no plugin is loaded): the sections `ExperimentConfig` declares."""
    return [BACKENDS.builtin(name) for name in BACKENDS.builtin_names()]


def create(name: str) -> InferenceBackend:
    """A new backend instance for `name`. Raises BackendError if unknown or its engine is not installed."""
    backend = spec(name)
    try:
        return backend.create()
    except ImportError as exc:
        raise BackendError(f"backend '{name}' is not usable here: {exc}") from exc


def missing_modules_problem(name: str, where: str) -> str | None:
    """One line naming the import names `name`'s spec needs (`BackendSpec.modules`, checked with
    find_spec: nothing is imported) that are not installed, and how to install them; None if none is
    missing. `where` says which environment was checked ("this environment", "its environment").
    Raises BackendError if `name` is unknown."""
    backend = spec(name)
    missing = [m for m in backend.modules if importlib.util.find_spec(m) is None]
    if not missing:
        return None
    hint = f": pip install 'llem-ray[{backend.install_extra}]'" if backend.install_extra else ""
    return f"backend '{name}' needs {', '.join(missing)}, not installed in {where}{hint}"
