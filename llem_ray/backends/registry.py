"""Backends by name (INF-10): tests inject a deterministic backend with `register`, never by patching.

Factories are imported lazily so `import llem_ray` never imports torch, vllm or tensorrt_llm.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from llem_ray.backends.protocol import InferenceBackend
from llem_ray.errors import BackendError
from llem_ray.plugins import load_plugins

BackendFactory = Callable[[], InferenceBackend]

_BUILTIN: dict[str, str] = {
    "pytorch": "llem_ray.backends.pytorch:PyTorchBackend",
    "vllm": "llem_ray.backends.vllm:VLLMBackend",
    "tensorrt": "llem_ray.backends.tensorrt:TensorRTBackend",
}
_REGISTERED: dict[str, BackendFactory] = {}


def register(name: str, factory: BackendFactory) -> None:
    """Make `factory` the backend called `name` (overrides a built-in of the same name)."""
    _REGISTERED[name] = factory


def unregister(name: str) -> None:
    """Forget a registered backend (built-ins come back)."""
    _REGISTERED.pop(name, None)


def create(name: str) -> InferenceBackend:
    """A new backend instance for `name`. Raises BackendError if unknown or its engine is not installed."""
    load_plugins()
    if name in _REGISTERED:
        return _REGISTERED[name]()
    target = _BUILTIN.get(name)
    if target is None:
        raise BackendError(f"unknown backend '{name}' (known: {', '.join(sorted({*_BUILTIN, *_REGISTERED}))})")
    module_name, attr = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendError(f"backend '{name}' is not usable here: {exc}") from exc
    return getattr(module, attr)()
