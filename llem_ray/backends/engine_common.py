"""What the vLLM and TensorRT-LLM adapters share: model sources, prompt encoding, model facts,
and `EngineBackend`, the load / generate / prefill / unload cycle of an offline `LLM` engine.

Both engines need a Hugging Face model directory (config.json, plus weights unless they load dummy
weights). `ModelSource.prepare` gives them one for every kind of `ExperimentConfig.model`:
- a hub id or a local model directory: passed through unchanged;
- a built-in `llem/<shape>` or a bare `config.json` file: written once to a content-addressed
  directory `<tmp>/llem-models/<name>-<sha>/` (config.json, and the download-free byte-level
  tokenizer when prompts are text), published by an atomic rename and reused by every later
  experiment of the same shape. The path must be stable: vLLM's compilation cache is keyed by
  the model path among other things, so a fresh directory per experiment would recompile the
  model (tens of seconds on an 8 B shape) in every experiment.

Synthetic prompts are token ids, so the engines run without a tokenizer (`skip_tokenizer_init`):
no download, and token ids are validated against the model's vocabulary, not a stand-in
tokenizer's. Text prompts are tokenised here with the engine's tokenizer and truncated to
`max_input_tokens` (first tokens kept, as the PyTorch backend does), so every backend sees the
same token ids and counts input tokens the same way.

Nothing here imports an engine; `prepare` imports transformers only to write the byte-level
tokenizer of a built-in shape.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llem_ray.backends import shapes
from llem_ray.backends.protocol import GenerationOutput, ModelInfo, Prompt, RequestTiming
from llem_ray.config.ssot import TORCH_DTYPES
from llem_ray.errors import BackendError
from llem_ray.measure.vram import architecture_config, count_parameters

if TYPE_CHECKING:
    from llem_ray.config.experiment import ExperimentConfig

EngineInput = list[int]
"""One prompt as the engines take it here: token ids."""


@dataclass(frozen=True)
class WorkloadClock:
    """When a workload was handed to the engine, on both clocks engines stamp requests with, s.

    `wall_s` is `time.time()`, `monotonic_s` is `time.monotonic()` (Linux: CLOCK_MONOTONIC, one
    clock for every process of the host, so an engine core process's stamps compare with ours).
    """

    wall_s: float
    monotonic_s: float


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
        text = json.dumps(cfg, indent=1, sort_keys=True)
        digest = hashlib.sha256(f"{text}\ntokenizer={needs_tokenizer}".encode()).hexdigest()[:16]
        label = Path(model).stem if not model.startswith(shapes.PREFIX) else model.removeprefix(shapes.PREFIX)
        target = Path(tempfile.gettempdir()) / MODEL_CACHE_DIR / f"{label}-{digest}"
        notes = [f"{model}: config in the shared model directory {target} (random weights)"]
        if needs_tokenizer:
            notes.append(f"{model} uses the built-in byte-level tokenizer")
        if not (target / "config.json").is_file():
            _publish_model_dir(target, text, needs_tokenizer)
        return cls(str(target), needs_tokenizer, notes=notes)


MODEL_CACHE_DIR = "llem-models"
"""Folder under the system temp directory holding the content-addressed model directories of built-in shapes."""


def _publish_model_dir(target: Path, config_text: str, needs_tokenizer: bool) -> None:
    """Write config.json (+ tokenizer) to a sibling temp dir, then rename it to `target` (atomic).

    Two processes racing publish the same content: the loser's rename fails and it keeps the winner's.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        (staging / "config.json").write_text(config_text)
        if needs_tokenizer:
            from llem_ray.backends.pytorch.loading import byte_level_tokenizer

            byte_level_tokenizer().save_pretrained(str(staging))
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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


class EngineBackend:
    """An offline `LLM` engine (vLLM, TensorRT-LLM), one model per instance. Raises BackendError.

    Every prompt of a workload goes to `LLM.generate` at once, as token ids, and the engine batches
    them. A subclass names the engine (`label`, in every error message), builds it (the `build`
    given to `_start`) and supplies its sampling arguments (`_sampling`), per-request timing
    (`_request_timing`) and shutdown (`_shutdown`); `_before_workload` and `_generate_extras` are
    hooks that do nothing here.
    """

    label: str
    """The engine's name in error messages ('vLLM', 'TensorRT-LLM')."""

    def __init__(self) -> None:
        self._engine: Any = None  # the engine's module: SamplingParams (and LLM) come from it
        self._llm: Any = None
        self._config: ExperimentConfig | None = None
        self._source: ModelSource | None = None
        self._tokenizer: Any = None

    def _sampling(self, config: ExperimentConfig, max_tokens: int, *, prefill: bool = False) -> dict[str, Any]:
        """Keyword arguments of the engine's `SamplingParams` for one workload (prefill: one token, no minimum)."""
        raise NotImplementedError

    def _request_timing(self, output: Any, batch_wall_s: float, clock: WorkloadClock) -> RequestTiming:
        """Timing of one of the engine's `RequestOutput`s of a workload handed over at `clock`; seconds."""
        raise NotImplementedError

    def _engine_facts(self) -> tuple[int | None, bool | None]:
        """(most requests run at once, prefix caching on) as the built engine reports them; None = unknown."""
        return None, None

    def _shutdown(self, llm: Any) -> None:
        """Shut the engine `llm` (and its worker processes) down."""
        raise NotImplementedError

    def _before_workload(self) -> None:
        """Called before each workload's timer starts (errors propagate unwrapped)."""

    def _generate_extras(self) -> dict[str, Any]:
        """Extra keyword arguments of `LLM.generate`."""
        return {}

    def _import(self, module: str, install_hint: str) -> Any:
        """The engine module `module`; BackendError naming `install_hint` when it cannot be imported."""
        try:
            return importlib.import_module(module)
        except ImportError as exc:
            raise BackendError(f"{self.label} is not installed in this environment ({exc}): {install_hint}") from exc

    def _start(
        self,
        start_s: float,
        engine: Any,
        config: ExperimentConfig,
        device: str,
        build: Callable[[ModelSource], list[str]],
    ) -> ModelInfo:
        """Prepare the model source, `build(source)` the engine (it returns notes), run one warm-up request
        (none for `config.cold_start`: its first measured request meets the engine cold).

        `start_s` is `time.perf_counter()` when loading began (load time covers the engine import).
        Any failure unloads again and raises BackendError.
        """
        self._engine, self._config = engine, config
        self._source = ModelSource.prepare(config)
        notes = list(self._source.notes)
        try:
            notes += build(self._source)
            if not config.cold_start:
                self._run([list(WARMUP_PROMPT_IDS)], self._sampling(config, 2))
        except BackendError:
            self.unload()
            raise
        except Exception as exc:  # engines raise anything from ValueError to MPI and CUDA errors
            self.unload()
            raise BackendError(f"{self.label} could not load '{config.model}': {type(exc).__name__}: {exc}") from exc
        max_concurrent, prefix_caching = self._engine_facts()
        return ModelInfo(
            n_parameters=self._source.n_parameters or 0,
            dtype=engine_dtype(config.precision),
            device=device,
            load_time_s=time.perf_counter() - start_s,
            vocab_size=self._source.vocab_size,
            notes=tuple(notes),
            max_concurrent_requests=max_concurrent,
            prefix_caching=prefix_caching,
        )

    def _run(self, inputs: list[EngineInput], params: dict[str, Any]) -> tuple[list[Any], float, WorkloadClock]:
        """(RequestOutputs in input order, wall time s, when it was handed over) of one workload."""
        if self._llm is None:
            raise BackendError(f"the {self.label} backend has no engine loaded")
        self._before_workload()
        extra = self._generate_extras()
        clock = WorkloadClock(time.time(), time.monotonic())
        start_s = time.perf_counter()
        try:
            outputs = self._llm.generate(
                [{"prompt_token_ids": ids} for ids in inputs],
                self._engine.SamplingParams(**params),
                use_tqdm=False,
                **extra,
            )
        except Exception as exc:
            raise BackendError(f"{self.label} generate failed: {type(exc).__name__}: {exc}") from exc
        return list(outputs), time.perf_counter() - start_s, clock

    def _loaded(self) -> ExperimentConfig:
        """The loaded experiment's config. Raises BackendError when no engine is loaded."""
        if self._llm is None or self._config is None:
            raise BackendError(f"the {self.label} backend has no engine loaded")
        return self._config

    def _inputs(self, prompts: list[Prompt]) -> list[EngineInput]:
        return encode_prompts(prompts, self._tokenizer, self._loaded().max_input_tokens)

    def generate(self, prompts: list[Prompt], max_new_tokens: int) -> GenerationOutput:
        """Run every prompt to completion in one workload (continuous / in-flight batching); blocks until done."""
        inputs = self._inputs(prompts)
        outputs, wall_s, clock = self._run(inputs, self._sampling(self._loaded(), max_new_tokens))
        requests = [self._request_timing(o, wall_s, clock) for o in outputs]
        return GenerationOutput(
            input_tokens=sum(len(ids) for ids in inputs),
            output_tokens=sum(r.output_tokens for r in requests),
            batch_latencies_s=[wall_s],
            requests=requests,
        )

    def prefill(self, prompts: list[Prompt]) -> GenerationOutput:
        """Prefill every prompt (the engine samples the one token a prefill step yields; it is not counted)."""
        inputs = self._inputs(prompts)
        _, wall_s, _ = self._run(inputs, self._sampling(self._loaded(), 1, prefill=True))
        return GenerationOutput(
            input_tokens=sum(len(ids) for ids in inputs), output_tokens=0, batch_latencies_s=[wall_s]
        )

    def unload(self) -> None:
        """Shut the engine down (`_shutdown`); safe to call twice."""
        llm, self._llm = self._llm, None
        self._tokenizer = None
        try:
            if llm is not None:
                self._shutdown(llm)
        except Exception as exc:
            raise BackendError(f"{self.label} shutdown failed: {type(exc).__name__}: {exc}") from exc
        finally:
            del llm
            self._source = None
