"""What the rest of llem_ray knows about one backend: its `BackendSpec` (CFG-06, CFG-08).

Each backend is one package `llem_ray/backends/<name>/` whose `__init__.py` holds its `SPEC` and
whose `config.py` holds its section model; its implementation (which imports the engine) is named
by an import path and imported only when an experiment creates the backend. A plugin builds a spec
the same way and registers it (`backends.registry.register`). Validation, the sweep grammar, the
configuration reference, `llem config`, the runtime_env pre-flight, steady-state detection, engine
coverage and the report's KV-cache label all read the spec; nothing else keeps a table of backends.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llem_ray.config.limits import StrictModel

if TYPE_CHECKING:
    from llem_ray.backends.protocol import InferenceBackend

ENGINE_KV_CACHE_FIELDS: tuple[str, ...] = (
    "kv_cache_dtype",
    "block_size",
    "enable_prefix_caching",
    "kv_cache_free_gpu_memory_fraction",
)
"""Section fields of an engine backend that describe its KV cache, in the order the label lists them."""


class Section(StrictModel):
    """Base of every backend section: strict, and None everywhere means "use the engine's default"."""

    def explicit(self) -> dict[str, Any]:
        """Fields the user set (non-None), as a dict: what the backend passes to its engine."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


def engine_kv_cache_label(section: Mapping[str, Any]) -> str:
    """KV-cache label of an engine section: its `ENGINE_KV_CACHE_FIELDS` that are set, or 'engine default'."""
    parts = [f"{key}={section[key]}" for key in ENGINE_KV_CACHE_FIELDS if section.get(key) is not None]
    return ", ".join(parts) or "engine default"


@dataclass(frozen=True)
class BackendSpec:
    """One backend as the rest of llem_ray sees it.

    `name`: the `backend:` value and the name of its section. `section`: the section model.
    `factory`: the backend class (or any zero-argument callable returning an `InferenceBackend`), or
    its `module:attr` import path so the engine is imported only when an experiment runs.
    `precisions`, `decoding_modes`, `scenarios`: what it supports (CFG-08; names of `config/ssot.py`).
    `modules`: import names it needs where its actors run; they are also the distributions `llem
    config` reports. `install_extra`: the pip extra that installs them (None: no hint).
    `must_isolate`: cannot share one Python environment with another backend that must isolate.
    `static_batching`: requests run in fixed batches of `batch_size_field`, one batch after another
    (default 1); otherwise the engine batches continuously, at most `batch_size_field` requests at
    once (default: all `n`). `supports_lora`: accepts a `lora:` adapter.
    `kv_cache_label`: the report's KV-cache label from the section as a dict.
    `engine_module`, `engine_arguments`: the engine's module and the `module` path of this backend's
    `engine_arguments(module, runtime)` / `section_mapping(runtime)` (engine coverage, PARAM-04);
    None when there is no engine-argument coverage to report.
    """

    name: str
    section: type[Section]
    factory: str | Callable[[], InferenceBackend]
    precisions: tuple[str, ...]
    decoding_modes: tuple[str, ...]
    scenarios: tuple[str, ...] = ("offline",)
    modules: tuple[str, ...] = ()
    install_extra: str | None = None
    must_isolate: bool = False
    static_batching: bool = False
    batch_size_field: str | None = None
    supports_lora: bool = True
    kv_cache_label: Callable[[Mapping[str, Any]], str] = engine_kv_cache_label
    engine_module: str | None = None
    engine_arguments: str | None = None

    def create(self) -> InferenceBackend:
        """A new backend instance. Raises ImportError when the implementation's engine is not installed."""
        factory = self.factory
        if isinstance(factory, str):
            module_name, attr = factory.split(":")
            factory = getattr(importlib.import_module(module_name), attr)
        return factory()
