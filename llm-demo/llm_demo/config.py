"""Declarative configuration: ``config/model.yaml`` plus command-line overrides.

``load_config(path, overrides)`` reads the YAML file, applies dotted overrides such as
``{"model.id": "org/name", "build.runtime": "python"}`` (values given as strings are parsed as YAML
scalars, so ``"8"`` becomes ``8``), validates every field, and returns a frozen :class:`DemoConfig`.
Unknown keys inside the known sections are errors (typos must not pass silently); unknown top-level
sections are kept verbatim in :attr:`DemoConfig.extra` for other parts of the tool.

Failure mode: every problem raises :class:`~llm_demo.errors.ConfigError` (exit code 2) naming the key.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

RUNTIMES = ("engine", "llmapi", "python")
CREDENTIAL_SOURCES = ("env", "file", "none")

#: precision profile -> (model dtype, weight-only quantisation or None). Units: none.
PRECISION_PROFILES: dict[str, tuple[str, str | None]] = {
    "fp32": ("float32", None),
    "fp16": ("float16", None),
    "bf16": ("bfloat16", None),
    "int8_wo": ("float16", "int8"),
    "int4_wo": ("float16", "int4"),
}
#: profiles the ``python`` runtime (transformers) can serve.
PYTHON_RUNTIME_PROFILES = ("fp32", "fp16", "bf16")
#: ``precision.kv_cache_dtype`` values each runtime passes to its build: ``engine`` -> convert_checkpoint.py
#: ``--int8_kv_cache`` (fp8 needs TensorRT-LLM's quantize.py, which llm-demo does not run); ``llmapi`` ->
#: ``kv_cache_config.dtype``; ``python`` (transformers) keeps the model's dtype.
KV_CACHE_DTYPES: dict[str, tuple[str, ...]] = {"engine": ("int8",), "llmapi": ("fp8",), "python": ()}

_DOC = "docs/usage.md#configuration"


@dataclass(frozen=True)
class ModelSection:
    name: str = "llm"
    id: str | None = None
    revision: str = "main"
    local_dir: str | None = None
    tokenizer: str | None = None
    tokenizer_revision: str | None = None
    family: str = "llama"
    allow_patterns: tuple[str, ...] = ("*.json", "*.safetensors", "tokenizer.model", "*.txt")
    sha256: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PrecisionSection:
    profile: str = "fp16"
    kv_cache_dtype: str | None = None


@dataclass(frozen=True)
class BuildSection:
    runtime: str = "python"
    max_batch_size: int = 8
    max_input_len: int = 1024
    max_seq_len: int = 2048
    max_num_tokens: int = 8192
    tensor_parallelism: int = 1
    pipeline_parallelism: int = 1
    max_beam_width: int = 1
    gemm_plugin: str = "auto"
    kv_cache_type: str = "paged"
    kv_cache_free_gpu_mem_fraction: float = 0.85
    decoupled: bool = True
    instance_count: int = 1
    python: str | None = None
    convert_script: str = "convert_checkpoint.py"
    trtllm_build: str = "trtllm-build"
    extra_convert_args: tuple[str, ...] = ()
    extra_build_args: tuple[str, ...] = ()
    tensorrtllm_backend_models: str | None = None
    container_image: str | None = None
    deployment_target: str = "local-triton"
    timeout_s: float = 7200.0


@dataclass(frozen=True)
class CredentialsSection:
    source: str = "env"
    env_var: str = "HF_TOKEN"
    file: str = "~/.cache/huggingface/token"
    required: bool = False


@dataclass(frozen=True)
class CacheSection:
    retention_days: float = 30.0


@dataclass(frozen=True)
class RedactionSection:
    patterns: tuple[str, ...] = ()
    secret_env_vars: tuple[str, ...] = ()


@dataclass(frozen=True)
class DemoConfig:
    """The validated configuration. ``source`` is the YAML file it came from (None: defaults only)."""

    model: ModelSection
    precision: PrecisionSection
    build: BuildSection
    credentials: CredentialsSection
    cache: CacheSection
    redaction: RedactionSection
    extra: Mapping[str, Any] = field(default_factory=dict)
    source: str | None = None

    @property
    def runtime(self) -> str:
        return self.build.runtime

    @property
    def model_ref(self) -> str:
        """What the model is taken from: ``model.local_dir`` when set (then ``model.id`` is ignored),
        else ``model.id``; recorded as the model id in the cache manifest and chat transcripts."""
        return self.model.local_dir or self.model.id or ""

    @property
    def tokenizer_ref(self) -> str:
        """Where the tokenizer comes from: ``model.tokenizer``, else the model's local dir or id."""
        return self.model.tokenizer or self.model.local_dir or self.model.id or ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists), ``source`` excluded."""
        data = asdict(self)
        data.pop("source")
        return json.loads(json.dumps(data, default=list))

    def config_hash(self) -> str:
        """SHA-256 (hex) of the canonical JSON of :meth:`to_dict`: equal configs, equal hash."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


_SECTIONS = {
    "model": ModelSection,
    "precision": PrecisionSection,
    "build": BuildSection,
    "credentials": CredentialsSection,
    "cache": CacheSection,
    "redaction": RedactionSection,
}


def _coerce(section: str, name: str, value: Any, annotation: str) -> Any:
    key = f"{section}.{name}"
    if value is None:
        if "None" in annotation:
            return None
        raise ConfigError(f"{key} must not be null", doc=_DOC)
    if annotation.startswith("tuple"):
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}", doc=_DOC)
        return tuple(str(v) for v in value)
    if annotation.startswith("Mapping"):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping, got {value!r}", doc=_DOC)
        return {str(k): str(v) for k, v in value.items()}
    if annotation == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}", doc=_DOC)
        return value
    if annotation == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}", doc=_DOC)
        return value
    if annotation == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}", doc=_DOC)
        return float(value)
    return str(value)


def _build_section(name: str, raw: Any) -> Any:
    cls = _SECTIONS[name]
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"section {name!r} must be a mapping", doc=_DOC)
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"unknown key(s) in section {name!r}: {', '.join(unknown)}", doc=_DOC)
    kwargs = {}
    for key, value in raw.items():
        f = known[key]
        kwargs[key] = _coerce(name, key, value, str(f.type))
    return cls(**kwargs)


def apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of ``data`` with dotted ``section.key`` overrides applied (strings parsed as YAML)."""
    data = copy.deepcopy(data)
    for dotted, value in overrides.items():
        if value is None:
            continue
        parts = dotted.split(".")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"override {dotted!r} must look like section.key", doc=_DOC)
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value) if value.strip() else value
            except yaml.YAMLError:
                pass
        section = data.setdefault(parts[0], {})
        if not isinstance(section, dict):
            raise ConfigError(f"section {parts[0]!r} must be a mapping", doc=_DOC)
        section[parts[1]] = value
    return data


def parse_set_options(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Turn ``["build.runtime=python", ...]`` (the CLI's ``--set``) into an overrides dict."""
    result = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects section.key=value, got {item!r}", doc=_DOC)
        result[key.strip()] = value
    return result


def load_config(path: Path | str | None, overrides: Mapping[str, Any] | None = None) -> DemoConfig:
    """Load, override and validate. ``path=None`` uses built-in defaults only."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"configuration file not found: {path}", doc=_DOC) from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"invalid YAML in {path}: {exc}", doc=_DOC) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path} must contain a mapping at top level", doc=_DOC)
        data = loaded or {}
    data = apply_overrides(data, overrides or {})
    sections = {name: _build_section(name, data.get(name)) for name in _SECTIONS}
    extra = {k: v for k, v in data.items() if k not in _SECTIONS}
    cfg = DemoConfig(**sections, extra=extra, source=str(path) if path else None)
    validate(cfg)
    return cfg


def validate(cfg: DemoConfig) -> None:
    """Cross-field checks; raises :class:`ConfigError`."""
    m, b = cfg.model, cfg.build
    if not m.id and not m.local_dir:
        raise ConfigError(
            "model.id or model.local_dir is required",
            remediation="set one in config/model.yaml or pass --model-id / --model-dir",
            doc=_DOC,
        )
    if not m.name or not all(c.isalnum() or c in "-_." for c in m.name):
        raise ConfigError(
            f"model.name {m.name!r} must be non-empty and use only letters, digits, '-', '_', '.'", doc=_DOC
        )
    if b.runtime not in RUNTIMES:
        raise ConfigError(f"build.runtime must be one of {', '.join(RUNTIMES)}, got {b.runtime!r}", doc=_DOC)
    if cfg.precision.profile not in PRECISION_PROFILES:
        raise ConfigError(
            f"precision.profile must be one of {', '.join(PRECISION_PROFILES)}, got {cfg.precision.profile!r}", doc=_DOC
        )
    if b.runtime == "python" and cfg.precision.profile not in PYTHON_RUNTIME_PROFILES:
        raise ConfigError(
            f"precision.profile {cfg.precision.profile!r} needs TensorRT-LLM; "
            f"the python runtime supports {', '.join(PYTHON_RUNTIME_PROFILES)}",
            doc=_DOC,
        )
    kv = cfg.precision.kv_cache_dtype
    if kv is not None and kv not in KV_CACHE_DTYPES[b.runtime]:
        supported = ", ".join(KV_CACHE_DTYPES[b.runtime]) or "none, leave it null"
        raise ConfigError(
            f"precision.kv_cache_dtype {kv!r} is not supported by the {b.runtime} runtime (supported: {supported})",
            doc=_DOC,
        )
    if b.runtime == "python" and (b.tensor_parallelism, b.pipeline_parallelism) != (1, 1):
        raise ConfigError(
            "the python runtime serves on one device: build.tensor_parallelism and pipeline_parallelism must be 1",
            doc=_DOC,
        )
    if cfg.credentials.source not in CREDENTIAL_SOURCES:
        raise ConfigError(f"credentials.source must be one of {', '.join(CREDENTIAL_SOURCES)}", doc=_DOC)
    for key in (
        "max_batch_size",
        "max_input_len",
        "max_seq_len",
        "max_num_tokens",
        "tensor_parallelism",
        "pipeline_parallelism",
        "max_beam_width",
        "instance_count",
    ):
        if getattr(b, key) < 1:
            raise ConfigError(f"build.{key} must be >= 1", doc=_DOC)
    if b.max_input_len > b.max_seq_len:
        raise ConfigError("build.max_input_len must not exceed build.max_seq_len", doc=_DOC)
    if not 0.0 < b.kv_cache_free_gpu_mem_fraction <= 1.0:
        raise ConfigError("build.kv_cache_free_gpu_mem_fraction must be in (0, 1]", doc=_DOC)
    if cfg.cache.retention_days <= 0:
        raise ConfigError("cache.retention_days must be > 0", doc=_DOC)
