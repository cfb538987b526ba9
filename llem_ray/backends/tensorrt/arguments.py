"""How the `tensorrt:` section maps to TensorRT-LLM's `LLM` arguments (engine coverage, PARAM-04)."""

from __future__ import annotations

from typing import Any

from llem_ray.backends.coverage import argument_names
from llem_ray.backends.tensorrt.backend import ENGINE_ARG_OF_FIELD, ENGINE_RUNTIME_ARG_OF_FIELD, SET_BY_BACKEND
from llem_ray.backends.tensorrt.config import TRT_ENGINE_ONLY_FIELDS, TRT_PYTORCH_ONLY_FIELDS, TensorRTConfig


def engine_arguments(module: Any, runtime: str) -> set[str]:
    """Argument names of TRT-LLM's argument model for `runtime` ('pytorch' or 'engine'), or of `LLM.__init__`."""
    llmapi = getattr(module, "llmapi", None)
    model = getattr(llmapi, "TrtLlmArgs" if runtime == "engine" else "TorchLlmArgs", None)
    return argument_names(model if model is not None else module.LLM.__init__)


def section_mapping(runtime: str) -> tuple[dict[str, str], tuple[str, ...]]:
    """({section field: engine argument}, backend-set arguments) on `runtime`: fields of the other runtime
    and fields with no engine argument are left out."""
    renamed = ENGINE_RUNTIME_ARG_OF_FIELD if runtime == "engine" else ENGINE_ARG_OF_FIELD
    other_runtime = TRT_PYTORCH_ONLY_FIELDS if runtime == "engine" else TRT_ENGINE_ONLY_FIELDS
    mapping = {f: renamed.get(f, f) for f in TensorRTConfig.model_fields if f not in other_runtime}
    return {f: arg for f, arg in mapping.items() if arg is not None}, SET_BY_BACKEND
