"""Engine-argument coverage of the backend sections (PARAM-04): what an installed engine accepts that
the `vllm:` / `tensorrt:` section does not expose, and which section fields the engine no longer knows.

Each backend's spec names its engine module and the module that maps its section to engine arguments
(`backends/<name>/arguments.py`). The engine's argument list is read by introspection, so a new engine
release is audited without editing a list: vLLM's `EngineArgs` dataclass (every `vllm.LLM` keyword ends up there); for
TensorRT-LLM the argument model of the runtime (`llmapi.TorchLlmArgs`, or `llmapi.TrtLlmArgs` for
the engine runtime), falling back to the signature of `LLM.__init__`.

Arguments are classified as
- covered: some section field maps to it (`backends.tensorrt.backend.ENGINE_ARG_OF_FIELD` for renamed ones);
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

from llem_ray.backends import registry


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
        return "\n".join(
            [
                f"{self.backend} (engine {self.engine_version}): {self.covered_fraction:.0%} of engine arguments "
                f"covered by the section or set by the backend",
                f"  covered by the section ({len(self.covered)}): {', '.join(self.covered) or '-'}",
                f"  set by the backend ({len(self.set_by_backend)}): {', '.join(self.set_by_backend) or '-'}",
                f"  only via passthrough_kwargs ({len(self.uncovered)}): {', '.join(self.uncovered) or '-'}",
                f"  section fields the engine lacks ({len(self.stale)}): {', '.join(self.stale) or '-'}",
            ]
        )


def argument_names(spec: Any) -> set[str]:
    """Argument names of a dataclass, a pydantic model class or a callable (its keyword parameters)."""
    if dataclasses.is_dataclass(spec):
        return {f.name for f in dataclasses.fields(spec)}
    fields = getattr(spec, "model_fields", None)
    if isinstance(fields, dict):
        return set(fields)
    params = inspect.signature(spec).parameters.values()
    return {p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def covered_backends() -> list[str]:
    """Backends whose spec names an engine and its argument mapping, in registry order."""
    return [s.name for s in registry.specs() if s.engine_module and s.engine_arguments]


def coverage(backend: str, module: Any = None, runtime: str = "pytorch") -> Coverage:
    """Coverage of `backend`'s section against `module` (default: the installed engine, imported now).

    `runtime` picks TensorRT-LLM's argument model ('pytorch' or 'engine'; ignored for vLLM).
    Raises KeyError for an unknown backend and ImportError when the engine is not installed.
    """
    spec = registry.find(backend)
    if spec is None or spec.engine_module is None or spec.engine_arguments is None:
        raise KeyError(f"no engine-argument coverage for backend '{backend}' (known: {', '.join(covered_backends())})")
    module = module if module is not None else importlib.import_module(spec.engine_module)
    arguments = importlib.import_module(spec.engine_arguments)
    engine_args = arguments.engine_arguments(module, runtime)
    mapping, set_by_backend = arguments.section_mapping(runtime)
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
    for backend in argv or covered_backends():
        try:
            print(coverage(backend).render())
        except ImportError as exc:
            print(f"{backend}: engine not installed here ({exc}); run this where it is (its runtime_env)")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
