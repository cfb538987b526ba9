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


RENAMED_FIELDS: dict[str, str] = {
    "execution.config_gap_s": "execution.config_gap_seconds",
    "execution.cycle_gap_s": "execution.cycle_gap_seconds",
    "model_name": "model",
    "fp_precision": "precision",
    "num_input_prompts": "n",
    "extra": "passthrough_kwargs",
    "serving.request_rate": "serving.request_rate_req_s",
}
"""Old field paths -> the names that replaced them: this tool's gap names (CFG-15), the seed's own
v1 names (CFG-02, CFG-03), and the serving rate as issue #17 first spelled it (the unit joined the
name). An old spelling is a configuration error that names the new one: no alias, so a file means
one thing."""


def error_message(err: Any) -> str:
    """The problem of one pydantic error (an `errors()` entry), without pydantic's prefixes.

    An unknown field that is an old spelling (`RENAMED_FIELDS`) says what it is called now.
    """
    if err["type"] == "extra_forbidden":
        renamed = RENAMED_FIELDS.get(".".join(str(p) for p in err["loc"]))
        return f"renamed to {renamed}" if renamed else "unknown field"
    return str(err["msg"]).removeprefix("Value error, ")


def format_validation_error(exc: ValidationError, source: str, prefix: str = "") -> str:
    """One readable message: `source: field.path: problem (got value)` per error, no traceback."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        msg = error_message(err)
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


def load_study_config(path: str | Path, overrides: dict[str, Any] | None = None) -> StudyConfig:
    """Load a study YAML and expand it, completed from the user config (`with_user_defaults`).

    A single-experiment YAML becomes a one-experiment study (CFG-17), with `overrides` (top-level
    experiment fields, as `llem run` flags give them) applied and its `output_dir` as the study's;
    a real study refuses overrides (ConfigError: they belong in the study file).
    """
    data = read_yaml(path)
    if not is_study_document(data):
        experiment = experiment_from_mapping({**data, **(overrides or {})}, str(path))
        study = StudyConfig(experiments=[experiment])
        if experiment.output_dir is not None:
            study.output_dir = experiment.output_dir
    elif overrides:
        flag = next(iter(overrides)).replace("_", "-")
        raise ConfigError(f"{path}: --{flag} applies to experiment YAMLs only; set it in the study file")
    else:
        study = expand_study(data, str(path))
    return with_user_defaults(study, str(path))


def with_user_defaults(study: StudyConfig, source: str) -> StudyConfig:
    """`study` completed from the machine-local user config (CFG-23, CFG-24, STU-06).

    Execution gaps the study leaves unset come from `execution:`; an unset `output_dir` is
    `output.results_dir`; a backend whose runner is `docker:<image>` runs in that image (its
    `runtime_envs` entry gets `image_uri`). ConfigError when the study already gives that backend
    a runtime_env: the two would disagree on where it runs.
    """
    from llem_ray.config.study import RuntimeEnvConfig
    from llem_ray.config.user import load_user_config, runner_image

    user = load_user_config()
    machine = user.execution.model_dump(exclude_none=True)
    updates = {k: v for k, v in machine.items() if k not in study.execution.model_fields_set}
    if updates:
        study.execution = study.execution.model_copy(update=updates)
    if "output_dir" not in study.model_fields_set:
        study.output_dir = user.output.results_dir
    for backend in sorted({e.backend for e in study.experiments}):
        image = runner_image(backend, user)
        if image is None:
            continue
        if backend in study.runtime_envs:
            raise ConfigError(
                f"{source}: runtime_envs.{backend} is set, and the runner of {backend} (LLEM_RUNNER_"
                f"{backend.upper()} or the user config's runners.{backend}) is docker:{image}: say in one place "
                f"where {backend} runs"
            )
        study.runtime_envs[backend] = RuntimeEnvConfig(image_uri=image)
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
