"""Load experiment and study YAML files (CFG-18..20).

PyYAML's safe loader only (no `!!python/object`), bounded by `safe_yaml` (aliases counted at their
expanded size, depth, duplicate keys, finite numbers) and files over `MAX_CONFIG_BYTES` refused; YAML
errors are reported with file, line and column, validation errors with file and field path. Every
failure is a `ConfigError` (exit code 2); the original pydantic `ValidationError` is its `__cause__`.
Building `ExperimentConfig(...)` directly in Python still raises `ValidationError` unchanged (CLI-14).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from llem_ray.config import safe_yaml
from llem_ray.config.experiment import ExperimentConfig
from llem_ray.config.limits import MAX_CONFIG_BYTES
from llem_ray.config.study import StudyConfig
from llem_ray.config.sweep import expand_study, is_study_document
from llem_ray.errors import ConfigError

MAX_SHOWN_CHARS = 80
"""A value quoted in a message is cut to this many characters."""


def _shown(value: Any) -> str:
    if isinstance(value, (dict, list)) or value is None:
        return ""
    try:
        text = repr(value)
    except ValueError:  # an integer too long for str()
        text = "a number too long to show"
    return f" (got {text[:MAX_SHOWN_CHARS]}{'...' if len(text) > MAX_SHOWN_CHARS else ''})"


def format_validation_error(exc: ValidationError, source: str, prefix: str = "") -> str:
    """One readable message: `source: field.path: problem (got value)` per error, no traceback."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        lines.append(f"{source}: {loc or '<document>'}: {msg}{_shown(err.get('input'))}")
    return "\n".join(lines)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _reader_error(path: Path, text: str, exc: yaml.reader.ReaderError) -> ConfigError:
    """A character YAML does not allow (NUL, escape...): the line, and the key on that line if any."""
    line_no = text.count("\n", 0, exc.position) + 1
    line = text.splitlines()[line_no - 1] if text else ""
    key = line.split(":", 1)[0].strip() if ":" in line else ""
    field = f" {key}:" if re.fullmatch(r"[A-Za-z0-9_.-]+", key) else ""
    char = chr(exc.character) if isinstance(exc.character, int) else exc.character
    return ConfigError(f"{path}:{line_no}:{field} YAML error: character {char!r} is not allowed in YAML")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Parse a YAML file into a mapping with the bounded loader (`safe_yaml`).

    Raises ConfigError (missing, too large, not UTF-8, bad or refused YAML, not a mapping), one line
    that names the file, the line and column, and the field when the problem is in a value.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a config file")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    with path.open("rb") as handle:
        raw = handle.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        size = max(path.stat().st_size, len(raw))
        raise ConfigError(f"{path}: config file is {size:,} bytes; the limit is {MAX_CONFIG_BYTES:,}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    try:
        data = safe_yaml.parse(text)
    except yaml.reader.ReaderError as exc:
        raise _reader_error(path, text, exc) from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = _one_line(exc.problem or exc.context or exc)
        field = getattr(exc, "field", "")
        raise ConfigError(f"{where}: {field}: {problem}" if field else f"{where}: YAML error: {problem}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML error: {_one_line(exc)}") from exc
    if data is None:
        raise ConfigError(f"{path}: the file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the document must be a mapping of fields, got {type(data).__name__}")
    return data


def is_study_file(path: str | Path) -> bool:
    """True if the YAML at `path` is a study (has `sweep:` or `experiments:`). Raises ConfigError."""
    return is_study_document(read_yaml(path))


def experiment_from_mapping(data: dict[str, Any], source: str) -> ExperimentConfig:
    """Validate a mapping as an ExperimentConfig; ConfigError names `source` and the field path."""
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from exc


def load_experiment_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Load a single-experiment YAML, apply `overrides` (top-level fields), validate."""
    data = read_yaml(path)
    if is_study_document(data):
        raise ConfigError(f"{path}: this is a study (it has sweep/experiments); run it as a study")
    return experiment_from_mapping({**data, **(overrides or {})}, str(path))


def load_study_config(path: str | Path) -> StudyConfig:
    """Load a study YAML (or a single experiment as a one-experiment study, CFG-17) and expand it."""
    data = read_yaml(path)
    if not is_study_document(data):
        study = StudyConfig(experiments=[experiment_from_mapping(data, str(path))])
    else:
        study = expand_study(data, str(path))
    return _with_user_defaults(study)


def _with_user_defaults(study: StudyConfig) -> StudyConfig:
    """Fill execution gaps the study leaves unset from the machine-local user config (STU-06)."""
    from llem_ray.config.user import load_user_config

    machine = load_user_config().execution.model_dump(exclude_none=True)
    updates = {k: v for k, v in machine.items() if k not in study.execution.model_fields_set}
    if updates:
        study.execution = study.execution.model_copy(update=updates)
    return study


def resolve_experiment(
    config: str | Path | ExperimentConfig | None, overrides: dict[str, Any] | None = None
) -> ExperimentConfig:
    """The ExperimentConfig for `run_experiment`: a YAML path, a config object, or None (embedded default)."""
    overrides = overrides or {}
    if config is None:
        from llem_ray.measure.defaults import embedded_default_config

        base = embedded_default_config()
        return experiment_from_mapping({**base.model_dump(exclude_unset=True), **overrides}, "<arguments>")
    if isinstance(config, ExperimentConfig):
        if not overrides:
            return config
        return experiment_from_mapping({**config.model_dump(exclude_unset=True), **overrides}, "<arguments>")
    return load_experiment_config(config, overrides)
