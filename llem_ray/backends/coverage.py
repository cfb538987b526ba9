"""Engine-argument coverage of the backend sections (PARAM-04): what an installed engine accepts that
the `vllm:` / `tensorrt:` section does not expose, and which section fields the engine no longer knows.

The engine's argument list is read by introspection, so a new engine release is audited without
editing a list here: vLLM's `EngineArgs` dataclass (every `vllm.LLM` keyword ends up there); for
TensorRT-LLM the argument model of the runtime (`llmapi.TorchLlmArgs`, or `llmapi.TrtLlmArgs` for
the engine runtime), falling back to the signature of `LLM.__init__`.

Arguments are classified as
- covered: some section field maps to it (`tensorrt.ENGINE_ARG_OF_FIELD` for renamed ones);
- set by the backend: derived from the experiment (model, dtype, TP size, ...);
- uncovered: reachable only through `passthrough_kwargs`;
and section fields whose argument the installed engine lacks are `stale` (renamed or removed
upstream: passing them would fail).

`python -m llem_ray.backends.coverage [vllm] [tensorrt]` prints the report for every installed engine.
Importing the engine is the expensive part, and happens only here.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import sys
from dataclasses import dataclass
from typing import Any

from llem_ray.config.backends import TRT_ENGINE_ONLY_FIELDS, TRT_PYTORCH_ONLY_FIELDS, TensorRTConfig, VLLMConfig

ENGINE_MODULES: dict[str, str] = {"vllm": "vllm", "tensorrt": "tensorrt_llm"}


@dataclass(frozen=True)
class Coverage:
    """Coverage of one backend section against one installed engine (names sorted)."""

    backend: str
    engine_version: str
    covered: tuple[str, ...]
    set_by_backend: tuple[str, ...]
    uncovered: tuple[str, ...]
    stale: tuple[str, ...]

    @property
    def covered_fraction(self) -> float:
        """Share of the engine's arguments the section or the backend sets (0..1)."""
        total = len(self.covered) + len(self.set_by_backend) + len(self.uncovered)
        return (len(self.covered) + len(self.set_by_backend)) / total if total else 1.0

    def render(self) -> str:
        """The report as text: one line per class of argument."""
        return "\n".join([
            f"{self.backend} (engine {self.engine_version}): {self.covered_fraction:.0%} of engine arguments "
            f"covered by the section or set by the backend",
            f"  covered by the section ({len(self.covered)}): {', '.join(self.covered) or '-'}",
            f"  set by the backend ({len(self.set_by_backend)}): {', '.join(self.set_by_backend) or '-'}",
            f"  only via passthrough_kwargs ({len(self.uncovered)}): {', '.join(self.uncovered) or '-'}",
            f"  section fields the engine lacks ({len(self.stale)}): {', '.join(self.stale) or '-'}",
        ])


def argument_names(spec: Any) -> set[str]:
    """Argument names of a dataclass, a pydantic model class or a callable (its keyword parameters)."""
    if dataclasses.is_dataclass(spec):
        return {f.name for f in dataclasses.fields(spec)}
    fields = getattr(spec, "model_fields", None)
    if isinstance(fields, dict):
        return set(fields)
    params = inspect.signature(spec).parameters.values()
    return {p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def _engine_arguments(backend: str, module: Any, runtime: str) -> set[str]:
    if backend == "vllm":
        return argument_names(module.EngineArgs)
    llmapi = getattr(module, "llmapi", None)
    model = getattr(llmapi, "TrtLlmArgs" if runtime == "engine" else "TorchLlmArgs", None)
    return argument_names(model if model is not None else module.LLM.__init__)


def _section_mapping(backend: str, runtime: str) -> tuple[dict[str, str], tuple[str, ...]]:
    """({section field: engine argument}, backend-set arguments) for `backend` on `runtime`."""
    if backend == "vllm":
        from llem_ray.backends.vllm import SET_BY_BACKEND

        return {f: f for f in VLLMConfig.model_fields}, SET_BY_BACKEND
    from llem_ray.backends.tensorrt import ENGINE_ARG_OF_FIELD, ENGINE_RUNTIME_ARG_OF_FIELD, SET_BY_BACKEND

    renamed = ENGINE_RUNTIME_ARG_OF_FIELD if runtime == "engine" else ENGINE_ARG_OF_FIELD
    other_runtime = TRT_PYTORCH_ONLY_FIELDS if runtime == "engine" else TRT_ENGINE_ONLY_FIELDS
    mapping = {f: renamed.get(f, f) for f in TensorRTConfig.model_fields if f not in other_runtime}
    return {f: arg for f, arg in mapping.items() if arg is not None}, SET_BY_BACKEND


def coverage(backend: str, module: Any = None, runtime: str = "pytorch") -> Coverage:
    """Coverage of `backend`'s section against `module` (default: the installed engine, imported now).

    `runtime` picks TensorRT-LLM's argument model ('pytorch' or 'engine'; ignored for vLLM).
    Raises KeyError for an unknown backend and ImportError when the engine is not installed.
    """
    if backend not in ENGINE_MODULES:
        raise KeyError(f"no engine-argument coverage for backend '{backend}' (known: {', '.join(ENGINE_MODULES)})")
    module = module if module is not None else importlib.import_module(ENGINE_MODULES[backend])
    engine_args = _engine_arguments(backend, module, runtime)
    mapping, set_by_backend = _section_mapping(backend, runtime)
    covered = {arg for arg in mapping.values() if arg in engine_args}
    derived = set(set_by_backend) & (engine_args - covered)
    return Coverage(
        backend=backend,
        engine_version=str(getattr(module, "__version__", "unknown")),
        covered=tuple(sorted(covered)),
        set_by_backend=tuple(sorted(derived)),
        uncovered=tuple(sorted(engine_args - covered - derived)),
        stale=tuple(sorted(f for f, arg in mapping.items() if arg not in engine_args)),
    )


def main(argv: list[str]) -> int:
    """Print the coverage of each backend in `argv` (default: all); 0 if every engine asked for was found."""
    status = 0
    for backend in argv or list(ENGINE_MODULES):
        try:
            print(coverage(backend).render())
        except ImportError as exc:
            print(f"{backend}: engine not installed here ({exc}); run this where it is (its runtime_env)")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
