"""What the vLLM and TensorRT-LLM adapters share: model sources, prompt encoding, model facts, GPU memory.

Both engines need a Hugging Face model directory (config.json, plus weights unless they load dummy
weights). `ModelSource.prepare` gives them one for every kind of `ExperimentConfig.model`:
- a hub id or a local model directory: passed through unchanged;
- a built-in `llem/<shape>` or a bare `config.json` file: written to a fresh temporary directory
  (config.json, and the download-free byte-level tokenizer when prompts are text), removed again
  by `ModelSource.cleanup()`.

Synthetic prompts are token ids, so the engines run without a tokenizer (`skip_tokenizer_init`):
no download, and token ids are validated against the model's vocabulary, not a stand-in
tokenizer's. Text prompts are tokenised here with the engine's tokenizer and truncated to
`max_input_tokens` (first tokens kept, as the PyTorch backend does), so every backend sees the
same token ids and counts input tokens the same way.

Nothing here imports an engine; `prepare` imports transformers only to write the byte-level
tokenizer of a built-in shape.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llem_ray.backends import shapes
from llem_ray.backends.protocol import Prompt
from llem_ray.config.ssot import TORCH_DTYPES
from llem_ray.errors import BackendError
from llem_ray.measure.vram import architecture_config, count_parameters

if TYPE_CHECKING:
    from llem_ray.config.experiment import ExperimentConfig

EngineInput = list[int]
"""One prompt as the engines take it here: token ids."""

WARMUP_PROMPT_IDS: tuple[int, ...] = (1, 1, 1, 1)
"""Token ids of the single kernel warm-up request an engine backend runs at load (valid in any vocabulary)."""


@dataclass
class ModelSource:
    """Where an engine loads the model from (`path_or_id`), and facts read from its config.

    `eos_token_id` / `pad_token_id` are the config's (None when absent); `vocab_size` and
    `n_parameters` are None when the config cannot be read without the network.
    """

    path_or_id: str
    needs_tokenizer: bool
    vocab_size: int | None = None
    n_parameters: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    notes: list[str] = field(default_factory=list)
    _tmpdir: Path | None = None

    @classmethod
    def prepare(cls, config: ExperimentConfig) -> ModelSource:
        """The model source of `config` (see module docstring). Raises BackendError for an unknown shape."""
        needs_tokenizer = config.dataset.source != "synthetic"
        cfg = architecture_config(config.model)
        local = shapes.local_config_path(config.model)
        bare_config = local is not None and local.name != "config.json"
        if config.model.startswith(shapes.PREFIX) or bare_config:
            if cfg is None:
                raise BackendError(
                    f"unknown built-in model '{config.model}' (built-in: {', '.join(shapes.builtin_names())})"
                )
            if config.weights != "random":
                raise BackendError(f"'{config.model}' is a shape without weights: set weights: random")
            source = cls._materialise(config.model, cfg, needs_tokenizer)
        else:
            source = cls(str(local.parent) if local is not None else config.model, needs_tokenizer)
        if cfg is not None:
            text = cfg.get("text_config", cfg)
            source.vocab_size = text.get("vocab_size")
            try:
                source.n_parameters = count_parameters(text)
            except KeyError:
                source.notes.append(f"config of '{config.model}' lacks sizes: parameter count unknown")
            source.eos_token_id = _first_id(text.get("eos_token_id", cfg.get("eos_token_id")))
            source.pad_token_id = _first_id(text.get("pad_token_id", cfg.get("pad_token_id")))
        else:
            source.notes.append(f"config of '{config.model}' not readable offline: parameter count unknown")
        return source

    @classmethod
    def _materialise(cls, model: str, cfg: dict[str, Any], needs_tokenizer: bool) -> ModelSource:
        tmpdir = Path(tempfile.mkdtemp(prefix="llem-model-"))
        (tmpdir / "config.json").write_text(json.dumps(cfg, indent=1))
        notes = [f"{model}: config written to a temporary model directory (random weights)"]
        if needs_tokenizer:
            from llem_ray.backends.pytorch_loading import byte_level_tokenizer

            byte_level_tokenizer().save_pretrained(str(tmpdir))
            notes.append(f"{model} uses the built-in byte-level tokenizer")
        return cls(str(tmpdir), needs_tokenizer, notes=notes, _tmpdir=tmpdir)

    def cleanup(self) -> None:
        """Remove the temporary model directory, if one was written; safe to call twice."""
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None


def _first_id(value: Any) -> int | None:
    if isinstance(value, list):
        return value[0] if value else None
    return value if isinstance(value, int) else None


def engine_dtype(precision: str) -> str:
    """Engine dtype name of a precision ('bf16' → 'bfloat16')."""
    return TORCH_DTYPES[precision]


def encode_prompts(prompts: list[Prompt], tokenizer: Any, max_input_tokens: int) -> list[EngineInput]:
    """Token ids of every prompt: ids as given, text through `tokenizer` truncated to `max_input_tokens`.

    Raises BackendError for a text prompt when the engine runs without a tokenizer.
    """
    out: list[EngineInput] = []
    for prompt in prompts:
        if prompt.token_ids is not None:
            out.append(list(prompt.token_ids))
        elif tokenizer is None:
            raise BackendError("text prompts need a tokenizer, but the engine was loaded for synthetic token ids")
        else:
            out.append(list(tokenizer.encode(prompt.text or ""))[:max_input_tokens])
    return out


def gpu_memory_used_mb(device: str) -> float | None:
    """Memory in use on the GPUs this process sees, summed, MiB (NVML; None on CPU or without NVML).

    The engines reserve their KV-cache pool up front in their own worker processes, so device
    memory in use is their footprint; torch's allocator counters of this process would miss it.
    """
    if device != "cuda":
        return None
    from llem_ray.energy.devices import nvml, visible_gpus

    gpus = visible_gpus()
    if not gpus.uuids:
        return None
    try:
        lib = nvml()
        used = [lib.nvmlDeviceGetMemoryInfo(lib.nvmlDeviceGetHandleByUUID(u)).used for u in gpus.uuids]
    except Exception:  # MeterUnavailable (no NVML) or NVMLError (memory info not supported)
        return None
    return sum(used) / 2**20
