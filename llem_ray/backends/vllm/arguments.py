"""How the `vllm:` section maps to vLLM's engine arguments (engine coverage, PARAM-04)."""

from __future__ import annotations

from typing import Any

from llem_ray.backends.coverage import argument_names
from llem_ray.backends.vllm.backend import SET_BY_BACKEND
from llem_ray.backends.vllm.config import VLLMConfig


def engine_arguments(module: Any, runtime: str) -> set[str]:
    """Argument names of `module.EngineArgs` (`runtime` is ignored: vLLM has one)."""
    return argument_names(module.EngineArgs)


def section_mapping(runtime: str) -> tuple[dict[str, str], tuple[str, ...]]:
    """({section field: engine argument}, backend-set arguments): vLLM's names are the section's."""
    return {f: f for f in VLLMConfig.model_fields}, SET_BY_BACKEND
