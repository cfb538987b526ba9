"""`PyTorchBackend` (CM-01): transformers `generate` in fixed-size batches.

Loads by hub id, local path or built-in shape (see `loading.py`), at the configured precision,
attention implementation, optional static KV cache and `torch.compile`; spreads the
model over all visible GPUs with `device_map` when there are several. Decoding follows the
experiment's `decoder` (greedy / sampling / beam search); with `fixed_output_length` every request
produces exactly `max_new_tokens` (`min_new_tokens = max_new_tokens`). `passthrough_kwargs` go to
`generate` untouched.

Compilation: without a static KV cache, `torch_compile` wraps the model's forward in `torch.compile`.
With `static_kv_cache`, transformers compiles the decoding steps itself (on CUDA, by default into
CUDA graphs, `CompileConfig(mode="reduce-overhead")`); `torch_compile: true` then only sets that
mode (`torch_compile_mode`) and `false` turns it off. Wrapping the forward as well would compile it
twice: seen on an H100 (transformers 5.17), `reduce-overhead` over a static cache then fails with
CUDA graphs' overwrite error in the static cache's `index_copy_`.

Per-request timing: a `TokenTimer` streamer records `time.perf_counter()` when each decoding step's
tokens reach the host. transformers already synchronises every step (its stop check reads a device
flag), so the timer adds one small device→host copy per step and nothing else. Every request of a
batch shares the batch's token times: TTFT = first token - batch start; ITL = gaps between its
tokens; latency = its last token - batch start. Beam search cannot stream, so it reports batch
latency only.
"""

from __future__ import annotations

import copy
import gc
import inspect
import time
from typing import TYPE_CHECKING, Any

import torch
from transformers import CompileConfig, GenerationConfig
from transformers.generation.streamers import BaseStreamer

from llem_ray.backends.protocol import GenerationOutput, ModelInfo, Prompt, RequestTiming
from llem_ray.backends.pytorch import loading
from llem_ray.backends.pytorch.config import PyTorchConfig
from llem_ray.device.sync import synchronize
from llem_ray.errors import BackendError

if TYPE_CHECKING:
    from llem_ray.config.experiment import ExperimentConfig


class TokenTimer(BaseStreamer):
    """Streamer recording the host time (perf_counter, s) of every generated step; skips the prompt."""

    def __init__(self) -> None:
        self.times_s: list[float] = []
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if self._prompt_seen:
            self.times_s.append(time.perf_counter())
        else:
            self._prompt_seen = True

    def end(self) -> None:
        """Nothing to flush."""


class PyTorchBackend:
    """transformers on PyTorch; one model per instance. Raises BackendError on any failure."""

    name = "pytorch"

    def __init__(self) -> None:
        self._model: Any = None
        self._tokenizer: Any = None
        self._device = "cpu"
        self._batch_size = 1
        self._max_input_tokens = 512
        self._generation: GenerationConfig | None = None
        self._fixed_length = True
        self._stream = True
        self._passthrough: dict[str, Any] = {}
        self._prefill_kwargs: dict[str, Any] = {}
        self._pad_id = 0

    def load(self, config: ExperimentConfig, device: str) -> ModelInfo:
        """Load `config`'s model on `device` ('cuda': every visible GPU; 'cpu')."""
        start_s = time.perf_counter()
        section = config.pytorch or PyTorchConfig()
        self._device = device
        if device == "cuda":
            if not torch.cuda.is_available():
                raise BackendError("device 'cuda' requested but torch sees no CUDA device")
        model = loading.build_model(config, section, device)
        if config.lora is not None:
            model = loading.apply_lora(model, config.lora.adapter, config.lora.merge)
        notes: list[str] = []
        if config.dataset.source != "synthetic":
            self._tokenizer, notes = loading.load_tokenizer(config)
        if section.torch_compile and not section.static_kv_cache:
            model.forward = torch.compile(model.forward, mode=section.torch_compile_mode or "default")
        self._model = model
        self._batch_size = config.batch_size
        self._max_input_tokens = config.max_input_tokens
        self._passthrough = dict(config.passthrough_kwargs or {})
        self._fixed_length = config.decoder.fixed_output_length
        self._stream = config.decoder.num_beams == 1
        self._generation = self._generation_config(config, section)
        forward_params = inspect.signature(model.forward).parameters
        self._prefill_kwargs = {"logits_to_keep": 1} if "logits_to_keep" in forward_params else {}
        compiled_static = bool(section.static_kv_cache) and device == "cuda" and section.torch_compile is not False
        return ModelInfo(
            n_parameters=sum(p.numel() for p in model.parameters()),
            dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
            device=device,
            load_time_s=time.perf_counter() - start_s,
            vocab_size=model.config.get_text_config().vocab_size,
            notes=tuple(notes),
            shape_specialised=compiled_static or bool(section.torch_compile),
        )

    def _generation_config(self, config: ExperimentConfig, section: PyTorchConfig) -> GenerationConfig:
        text_config = self._model.config.get_text_config()
        eos_id = self._tokenizer.eos_token_id if self._tokenizer is not None else text_config.eos_token_id
        pad_id = self._tokenizer.pad_token_id if self._tokenizer is not None else text_config.pad_token_id
        self._pad_id = pad_id if pad_id is not None else (eos_id if isinstance(eos_id, int) else 0)
        decoder = config.decoder
        kwargs: dict[str, Any] = {
            "do_sample": decoder.do_sample,
            "num_beams": decoder.num_beams,
            "pad_token_id": self._pad_id,
            "eos_token_id": eos_id,
        }
        if decoder.do_sample:
            kwargs["temperature"] = decoder.temperature
            kwargs.update({k: v for k in ("top_k", "top_p") if (v := getattr(decoder, k)) is not None})
        if decoder.repetition_penalty is not None:
            kwargs["repetition_penalty"] = decoder.repetition_penalty
        if section.use_cache is not None:
            kwargs["use_cache"] = section.use_cache
        if section.static_kv_cache:
            kwargs["cache_implementation"] = "static"
            if section.torch_compile is False:
                kwargs["disable_compile"] = True
            elif section.torch_compile:
                kwargs["compile_config"] = CompileConfig(mode=section.torch_compile_mode or "reduce-overhead")
        return GenerationConfig(**kwargs)

    def _call_config(self, max_new_tokens: int) -> tuple[GenerationConfig, dict[str, Any]]:
        """(generation config of one generate call, passthrough kwargs that are not generation options)."""
        generation = copy.deepcopy(self._generation)
        lengths = {"max_new_tokens": max_new_tokens}
        if self._fixed_length:
            lengths["min_new_tokens"] = max_new_tokens
        extra = generation.update(**lengths, **self._passthrough)
        return generation, extra

    @property
    def model(self) -> Any:
        """The loaded transformers model (None before `load` / after `unload`): for benchmarks comparing bare calls."""
        return self._model

    def _require_model(self) -> Any:
        if self._model is None:
            raise BackendError("the PyTorch backend has no model loaded")
        return self._model

    def _encode(self, prompts: list[Prompt]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask) of a batch, left-padded, on the model's input device."""
        target = self._require_model().device
        if all(p.token_ids is not None for p in prompts):
            width = max(len(p.token_ids or ()) for p in prompts)
            ids = torch.full((len(prompts), width), self._pad_id, dtype=torch.long)
            mask = torch.zeros((len(prompts), width), dtype=torch.long)
            for row, p in enumerate(prompts):
                tokens = p.token_ids or ()
                ids[row, width - len(tokens) :] = torch.tensor(tokens, dtype=torch.long)
                mask[row, width - len(tokens) :] = 1
            return ids.to(target), mask.to(target)
        if self._tokenizer is None or any(p.text is None for p in prompts):
            raise BackendError("text prompts need a tokenizer (the dataset is not synthetic) and no mixed batches")
        enc = self._tokenizer(
            [p.text for p in prompts],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=self._max_input_tokens,
        )
        return enc["input_ids"].to(target), enc["attention_mask"].to(target)

    def _batches(self, prompts: list[Prompt]) -> list[list[Prompt]]:
        return [prompts[i : i + self._batch_size] for i in range(0, len(prompts), self._batch_size)]

    def _tokens_per_row(self, new_tokens: torch.Tensor) -> list[int]:
        """Generated tokens of each row: all of them with a fixed length, else up to the first EOS."""
        rows, width = new_tokens.shape
        eos = self._generation.eos_token_id if self._generation is not None else None
        if self._fixed_length or eos is None:
            return [width] * rows
        eos_ids = torch.tensor(eos if isinstance(eos, list) else [eos])
        hits = torch.isin(new_tokens, eos_ids)
        first = torch.where(hits.any(dim=1), hits.int().argmax(dim=1) + 1, torch.full((rows,), width))
        return first.tolist()

    def generate(self, prompts: list[Prompt], max_new_tokens: int) -> GenerationOutput:
        """Generate for every prompt in batches of `batch_size`; blocks until the devices are done."""
        model = self._require_model()
        out = GenerationOutput(input_tokens=0, output_tokens=0, batch_latencies_s=[])
        generation, extra = self._call_config(max_new_tokens)
        for batch in self._batches(prompts):
            input_ids, mask = self._encode(batch)
            timer = TokenTimer() if self._stream else None
            start_s = time.perf_counter()
            try:
                with torch.inference_mode():
                    sequences = model.generate(
                        input_ids=input_ids, attention_mask=mask, generation_config=generation, streamer=timer, **extra
                    )
                synchronize(self._device)
            except (RuntimeError, ValueError, TypeError) as exc:
                raise BackendError(f"generate failed: {type(exc).__name__}: {exc}") from exc
            latency_s = time.perf_counter() - start_s
            counts = self._tokens_per_row(sequences[:, input_ids.shape[1] :].cpu())
            out.batch_latencies_s.append(latency_s)
            out.input_tokens += int(mask.sum())
            out.output_tokens += sum(counts)
            times = [t - start_s for t in timer.times_s] if timer is not None else []
            for n in counts:
                mine = times[:n] if len(times) >= n else []
                out.requests.append(
                    RequestTiming(
                        latency_s=mine[-1] if mine else latency_s,
                        output_tokens=n,
                        ttft_s=mine[0] if mine else None,
                        itl_s=[b - a for a, b in zip(mine, mine[1:])],
                    )
                )
        return out

    def prefill(self, prompts: list[Prompt]) -> GenerationOutput:
        """One forward pass per batch over the prompts (KV cache built, no token generated)."""
        model = self._require_model()
        out = GenerationOutput(input_tokens=0, output_tokens=0, batch_latencies_s=[])
        for batch in self._batches(prompts):
            input_ids, mask = self._encode(batch)
            start_s = time.perf_counter()
            with torch.inference_mode():
                model(input_ids=input_ids, attention_mask=mask, use_cache=True, **self._prefill_kwargs)
            synchronize(self._device)
            out.batch_latencies_s.append(time.perf_counter() - start_s)
            out.input_tokens += int(mask.sum())
        return out

    def unload(self) -> None:
        """Drop the model and tokenizer and release cached GPU memory; safe to call twice."""
        self._model = None
        self._tokenizer = None
        gc.collect()
        if self._device == "cuda" and torch.cuda.is_available():
            torch.cuda.empty_cache()
