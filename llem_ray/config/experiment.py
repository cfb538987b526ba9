"""`ExperimentConfig`: everything that defines one measurement (CFG-01..10).

Composition, not inheritance: shared fields at the top, sub-configs for decoding, warm-up,
baseline, energy, dataset and resources, and one optional section per backend. The backends come
from the backend registry (`backends/registry.py`): `backend:` must name a registered one, the
built-in sections are declared fields, and the section of a plugin backend is validated by its own
model under its own name. Unknown fields are errors everywhere, so a typo is an error that names
the field. Values are taken as typed (strict: `true` is not 1, `"4"` is not 4), every float must be
finite, and counts, durations and seeds have the upper bounds of `limits.py`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, create_model, field_validator, model_validator
from pydantic_core import InitErrorDetails

from llem_ray.backends import registry as backend_registry
from llem_ray.backends.spec import Section
from llem_ray.config import guards
from llem_ray.config.limits import (
    MAX_BEAMS,
    MAX_CPUS,
    MAX_FLOOR_S,
    MAX_GPUS,
    MAX_PROMPTS,
    MAX_SEED,
    MAX_TIMEOUT_S,
    MAX_TOKENS,
    MAX_WARMUP,
    MAX_WORKLOAD_TOKENS,
    STRICT_MODEL,
    StrictModel,
)
from llem_ray.config.serving import ServingConfig

BUILTIN_TINY_MODEL = "llem/tiny-llama"
"""Name of the built-in tiny random-weight Llama used when a config gives no `model`."""


class DecoderConfig(StrictModel):
    """Decoding parameters. Greedy by default so energy is comparable run to run."""

    do_sample: bool = Field(False, description="Sample instead of greedy decoding.")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature (ignored when greedy).")
    top_k: int | None = Field(None, ge=0, le=MAX_TOKENS)
    top_p: float | None = Field(None, gt=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0)
    num_beams: int = Field(1, ge=1, le=MAX_BEAMS, description="Beam search width; > 1 selects beam search.")
    fixed_output_length: bool = Field(
        True, description="Force exactly max_output_tokens per request (min_new_tokens = max_new_tokens)."
    )

    @property
    def mode(self) -> str:
        """Decoding mode (`ssot.DECODING_MODES`): greedy, sampling or beam_search."""
        if self.num_beams > 1:
            return "beam_search"
        return "sampling" if self.do_sample else "greedy"


class WarmupConfig(StrictModel):
    """Warm-up before the measured window (CM-21..24)."""

    n_warmup: int = Field(5, ge=0, le=MAX_WARMUP, description="Fixed number of warm-up batches (CM-21).")
    max_output_tokens: int = Field(16, ge=1, le=MAX_TOKENS, description="Output tokens per warm-up request (reduced).")
    thermal_floor_s: float = Field(
        60.0, ge=0, le=MAX_FLOOR_S, description="Wait after warm-up before measuring, s (CM-22). < 30 s is flagged."
    )
    convergence_detection: bool = Field(False, description="Opt-in CV-based convergence (CM-23).")
    target_cv: float = Field(0.05, gt=0, description="Stop warm-up when latency CV falls below this.")
    max_prompts: int = Field(20, ge=1, le=MAX_WARMUP, description="Upper bound on warm-up batches with convergence.")
    window_size: int = Field(5, ge=2, le=MAX_WARMUP, description="Latencies in the rolling CV window.")


class BaselineConfig(StrictModel):
    """Idle-power baseline (CM-17..20)."""

    enabled: bool = True
    duration_s: float = Field(30.0, gt=0, le=MAX_FLOOR_S, description="Idle measurement window, s.")
    cache_ttl_s: float = Field(
        3600.0, ge=0, le=MAX_TIMEOUT_S, description="Reuse a baseline of the same GPU this long, s."
    )


class EnergyConfig(StrictModel):
    """Which energy meter measures, and the timeseries sampling rate (CM-11..16)."""

    backend: Literal["auto", "nvml", "zeus", "codecarbon", "none"] = Field(
        "auto", description="auto = Zeus, then NVML, then CodeCarbon (CM-14)."
    )
    sample_hz: float = Field(10.0, gt=0, le=100, description="Timeseries sampler rate, Hz.")


class DatasetConfig(StrictModel):
    """Where prompts come from. A plain string in YAML means `source`."""

    source: str = Field(
        "aienergyscore", description="'synthetic', 'aienergyscore' (hub, cached) or a path to a JSONL file."
    )
    order: Literal["interleaved", "grouped", "shuffled"] = "interleaved"
    input_len_tokens: int = Field(
        128, ge=1, le=MAX_TOKENS, description="Prompt length of the synthetic dataset, tokens."
    )
    text_field: str | None = Field(None, description="JSONL field holding the prompt (auto-detected if None).")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"source": value} if isinstance(value, str) else value

    @field_validator("source")
    @classmethod
    def _source_printable(cls, value: str) -> str:
        return guards.printable(value)


class ResourcesConfig(StrictModel):
    """What one experiment needs from the cluster: whole GPUs (= tensor-parallel size) and CPUs."""

    gpus: int = Field(
        1, ge=1, le=MAX_GPUS, description="Whole GPUs the experiment owns (TP size). CPU-only hosts ignore it."
    )
    cpus: int = Field(1, ge=1, le=MAX_CPUS, description="CPU cores reserved for the experiment actor.")


class LoRAConfig(StrictModel):
    """Optional LoRA adapter (CFG-07)."""

    adapter: str = Field(..., description="Hub id or local path of the adapter.")
    merge: bool = Field(False, description="Merge the adapter into the base weights before measuring.")

    @field_validator("adapter")
    @classmethod
    def _adapter_printable(cls, value: str) -> str:
        return guards.printable(value)


def _registered_backends(schema: dict[str, Any]) -> None:
    """JSON schema of `backend`: one of the names registered when the schema is generated."""
    schema["enum"] = backend_registry.names()


def _prefixed(name: str, exc: ValidationError) -> list[InitErrorDetails]:
    """The errors of section `name`, located under it."""
    return [
        InitErrorDetails(
            type=e["type"], loc=(name, *e["loc"]), input=e["input"], **({"ctx": e["ctx"]} if "ctx" in e else {})
        )
        for e in exc.errors()
    ]


class _ExperimentFields(StrictModel):
    """`ExperimentConfig` without the built-in backend sections (added below from the registry)."""

    model_config = {**STRICT_MODEL, "extra": "allow"}

    name: str | None = Field(None, description="Label for output directories; derived if None.")
    model: str = Field(BUILTIN_TINY_MODEL, description="Hub id, local path, or a built-in 'llem/...' shape.")
    weights: Literal["pretrained", "random"] = Field(
        "pretrained", description="'random' builds the model from its config with random weights (no download)."
    )
    backend: str = Field(
        "pytorch",
        description=f"A registered backend: {', '.join(backend_registry.BACKENDS.builtin_names())}, or one a "
        "plugin registers (LLEM_PLUGINS).",
        json_schema_extra=_registered_backends,
    )
    scenario: Literal["offline", "serving"] = Field(
        "offline",
        description="offline: all n prompts at once, the measured window (default); serving: open-loop "
        "load at an SLO, configured in `serving:` (backends that serve: see the table above).",
    )
    precision: Literal["fp32", "fp16", "bf16"] = "bf16"
    device: Literal["auto", "cuda", "cpu"] = Field("auto", description="auto = CUDA if visible, else CPU.")
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    n: int = Field(
        100, ge=1, le=MAX_PROMPTS, description="Number of prompts in the measured window (offline scenario)."
    )
    max_input_tokens: int = Field(512, ge=1, le=MAX_TOKENS, description="Prompts are truncated to this many tokens.")
    max_output_tokens: int = Field(128, ge=1, le=MAX_TOKENS, description="New tokens per request.")
    random_seed: int = Field(42, ge=0, le=MAX_SEED, description="Seeds prompts, weights and sampling.")
    decoder: DecoderConfig = Field(default_factory=DecoderConfig)
    warmup: WarmupConfig = Field(default_factory=WarmupConfig)
    baseline: BaselineConfig = Field(default_factory=BaselineConfig)
    energy: EnergyConfig = Field(default_factory=EnergyConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    prefill_split: bool = Field(
        True, description="Measure a prefill-only loop to split prefill/decode (PREC-01; offline scenario)."
    )
    cold_start: bool = Field(
        False,
        description="Measure from a cold start (CAMP-05): no warm-up batches and no engine kernel warm-up at load, "
        "empty compilation caches; in a study also a new process (execution.force_cold_start sets it everywhere).",
    )
    serving: ServingConfig | None = Field(None, description="Load, duration and SLO of `scenario: serving`.")
    lora: LoRAConfig | None = None
    passthrough_kwargs: dict[str, Any] | None = Field(
        None, description="Passed untouched to the engine (escape hatch, CFG-03)."
    )
    output_dir: str | None = Field(
        None,
        description="Write results here. None: `llem run` uses the user config's output.results_dir; "
        "run_experiment() writes nothing (LA-04).",
    )

    @model_validator(mode="wrap")
    @classmethod
    def _plugin_sections(cls, data: Any, handler: Any) -> Any:
        """Validate the section of each plugin backend in `data` with its model (it is kept as an extra
        field under its name); any other unknown field is an error, as everywhere else (a key that is
        not a string is left to pydantic, which refuses it)."""
        if not isinstance(data, dict):
            return handler(data)
        data, errors = dict(data), []
        for key in [k for k in data if isinstance(k, str) and k not in cls.model_fields]:
            spec = backend_registry.find(key)
            if spec is None:
                errors.append(InitErrorDetails(type="extra_forbidden", loc=(key,), input=data[key]))
            elif data[key] is None:
                del data[key]
            else:
                try:
                    data[key] = spec.section.model_validate(data[key])
                except ValidationError as exc:
                    errors.extend(_prefixed(key, exc))
        try:
            config = handler(data)
        except ValidationError as exc:
            raise ValidationError.from_exception_data(cls.__name__, [*exc.errors(), *errors]) from None
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return config

    @field_validator("backend")
    @classmethod
    def _backend_registered(cls, value: str) -> str:
        known = backend_registry.names()
        if value not in known:
            raise ValueError(f"unknown backend '{value}' (registered: {', '.join(known)})")
        return value

    @field_validator("model")
    @classmethod
    def _model_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return guards.printable(value)

    @field_validator("name")
    @classmethod
    def _name_printable(cls, value: str | None) -> str | None:
        return value if value is None else guards.printable(value)

    @field_validator("output_dir")
    @classmethod
    def _output_dir_allowed(cls, value: str | None) -> str | None:
        return value if value is None else guards.output_dir(value)

    @field_validator("scenario")
    @classmethod
    def _backend_serves(cls, value: str, info: ValidationInfo) -> str:
        spec = backend_registry.find(info.data.get("backend", ""))
        if spec is not None and value not in spec.scenarios:
            serving = ", ".join(s.name for s in backend_registry.specs() if value in s.scenarios)
            backend = spec.name
            raise ValueError(f"'{value}' is not supported by backend '{backend}' yet (backends that run it: {serving})")
        return value

    def _check_scenario(self) -> None:
        if self.scenario == "offline":
            if self.serving is not None:
                raise ValueError("section 'serving' is set but scenario is 'offline' (set scenario: serving)")
            return
        if self.serving is None:
            raise ValueError("scenario 'serving' needs a 'serving' section with request_rate_req_s or concurrency")
        if "n" in self.model_fields_set:
            raise ValueError(
                "n applies to the offline scenario; serving sends requests for serving.duration_s (remove n)"
            )
        if self.prefill_split and "prefill_split" in self.model_fields_set:
            raise ValueError(
                "prefill_split: the serving scenario has no prefill-only loop (offline only): remove it or set it false"
            )
        prompt_tokens = self.serving.scheduled_requests() * min(self.dataset.input_len_tokens, self.max_input_tokens)
        if self.dataset.source == "synthetic" and prompt_tokens > MAX_WORKLOAD_TOKENS:
            raise ValueError(
                f"serving.request_rate_req_s x serving.duration_s x dataset.input_len_tokens = {prompt_tokens:,} "
                f"synthetic prompt tokens (encoded before the run); the limit is {MAX_WORKLOAD_TOKENS:,}"
            )

    @model_validator(mode="after")
    def _cross_validate(self) -> _ExperimentFields:
        spec = backend_registry.spec(self.backend)
        if self.precision not in spec.precisions:
            raise ValueError(
                f"precision '{self.precision}' is not supported by backend '{self.backend}' "
                f"(supported: {', '.join(spec.precisions)})"
            )
        mode = self.decoder.mode
        if mode not in spec.decoding_modes:
            raise ValueError(
                f"decoding mode '{mode}' is not supported by backend '{self.backend}' "
                f"(supported: {', '.join(spec.decoding_modes)})"
            )
        for other, section in self.sections().items():
            if other != self.backend and section is not None:
                raise ValueError(f"section '{other}' is set but backend is '{self.backend}'")
        if self.lora is not None and not spec.supports_lora:
            raise ValueError(f"lora is not supported by backend '{self.backend}'")
        prompt_tokens = self.n * min(self.dataset.input_len_tokens, self.max_input_tokens)
        if self.dataset.source == "synthetic" and prompt_tokens > MAX_WORKLOAD_TOKENS:
            raise ValueError(
                f"n x dataset.input_len_tokens = {prompt_tokens:,} synthetic prompt tokens; the limit is "
                f"{MAX_WORKLOAD_TOKENS:,}"
            )
        self._check_scenario()
        if self.model.startswith("llem/") and self.weights != "random":
            self.weights = "random"
        if self.cold_start:
            warmup = self.warmup
            if warmup.convergence_detection or ("n_warmup" in warmup.model_fields_set and warmup.n_warmup):
                raise ValueError(
                    "cold_start measures without warm-up: leave warmup.n_warmup and warmup.convergence_detection unset"
                )
            self.warmup = warmup.model_copy(update={"n_warmup": 0})
        return self

    def sections(self) -> dict[str, Section | None]:
        """Every backend section this config holds: the built-in ones (None when unset), then plugin ones."""
        declared = {name: getattr(self, name) for name in _BUILTIN_SECTIONS}
        return {**declared, **{k: v for k, v in (self.model_extra or {}).items() if isinstance(v, Section)}}

    @property
    def section(self) -> Section | None:
        """The backend section of the selected backend (None = all engine defaults)."""
        return self.sections().get(self.backend)

    @property
    def batch_size(self) -> int:
        """Requests run at once as configured: a static-batching backend's batch size (PyTorch
        `batch_size`, default 1); an engine's limit (`vllm.max_num_seqs`, `tensorrt.max_batch_size`)
        capped by `n`, or `n` when unset (the engine's own limit, read back after load, then gives
        the result's `batch_size`). The field is the spec's `batch_size_field`."""
        spec = backend_registry.spec(self.backend)
        section = self.section
        limit = getattr(section, spec.batch_size_field) if section is not None and spec.batch_size_field else None
        if spec.static_batching:
            return limit or 1
        return min(self.n, limit) if limit else self.n

    def display_name(self) -> str:
        """`name`, or a readable name derived from model, backend, precision and batch size."""
        if self.name:
            return self.name
        stem = f"{self.model.rsplit('/', 1)[-1]}_{self.backend}_{self.precision}"
        if self.serving is None:
            return f"{stem}_bs{self.batch_size}"
        if self.serving.concurrency is not None:
            return f"{stem}_c{self.serving.concurrency}"
        return f"{stem}_{self.serving.request_rate_req_s:g}rps"


_BUILTIN_SECTIONS = {spec.name: spec for spec in backend_registry.builtin_specs()}

ExperimentConfig = create_model(
    "ExperimentConfig",
    __base__=_ExperimentFields,
    __module__=__name__,
    __doc__="One experiment: model x backend x precision x decoding x batch, and how to measure it.",
    **{
        name: (spec.section | None, Field(None, description=f"Section of backend '{name}' (with backend: {name})."))
        for name, spec in _BUILTIN_SECTIONS.items()
    },
)

_NON_MEASUREMENT_FIELDS = {"name", "output_dir"}
_OFFLINE_DEFAULTS = {"scenario", "serving"}


def measurement_config_hash(config: ExperimentConfig) -> str:
    """SHA-256[:16] of everything that affects the measurement (RES-02, STU-11).

    Excludes labels and output location, so renaming an experiment or moving its output does not
    change its identity; stable across key orderings because the dump is serialised with sorted keys.
    An offline experiment leaves out `scenario` and `serving` too, so its hash is the one it had
    before the serving scenario existed (studies measured then still resume and compare).
    """
    offline = _OFFLINE_DEFAULTS if config.scenario == "offline" and config.serving is None else set()
    data = config.model_dump(mode="json", exclude=_NON_MEASUREMENT_FIELDS | offline)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
