"""Study YAML grammar (CFG-11..17): grid sweeps, dotted keys, explicit experiments, both combined.

A study document holds study-level keys (`STUDY_KEYS`) and, at the top level, base experiment
fields shared by every experiment. `sweep:` maps field paths to non-empty lists:
- plain or dotted paths into the experiment (`precision`, `decoder.temperature`) vary for every point;
- paths whose first segment is a backend (`pytorch.batch_size`) vary only points of that backend.
`experiments:` lists explicit experiments (merged onto the base). Grid points that fail validation
are skipped and recorded with the reason (not fatal); an invalid explicit experiment is an error.
The number of experiments is counted before anything is expanded and bounded by MAX_EXPERIMENTS.
Keys are expanded in sorted order, so YAML key order never changes the experiment list.
"""

from __future__ import annotations

import copy
import itertools
import math
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from llem_ray.backends import registry as backend_registry
from llem_ray.config.experiment import ExperimentConfig
from llem_ray.config.limits import MAX_EXPERIMENTS
from llem_ray.config.study import SkippedPoint, StudyConfig
from llem_ray.errors import ConfigError

STUDY_KEYS = frozenset({"name", "study_name", "sweep", "experiments", "execution", "runtime_envs", "output_dir"})


def is_study_document(raw: dict[str, Any]) -> bool:
    """True when a YAML mapping is a study (has `sweep:` or `experiments:`), not a single experiment."""
    return "sweep" in raw or "experiments" in raw


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The sub-config model of a field typed `Model` or `Model | None` (e.g. `serving`), else None."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _check_path(path: str, where: str) -> None:
    """Raise ConfigError unless `path` names a field of ExperimentConfig or of a backend section."""
    parts = path.split(".")
    model: type[BaseModel] = ExperimentConfig
    spec = backend_registry.find(parts[0])
    if spec is not None:
        model, parts = spec.section, parts[1:]
        if not parts:
            raise ConfigError(f"{where}: sweep key '{path}' names a backend section, not a field in it")
    for depth, part in enumerate(parts):
        fields = model.model_fields
        if part not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{where}: sweep key '{path}': unknown field '{part}' (known here: {known})")
        nested = _section_model(fields[part].annotation)
        if depth < len(parts) - 1:
            if nested is None:
                raise ConfigError(f"{where}: sweep key '{path}': '{part}' has no sub-fields")
            model = nested


def _set_path(target: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for part in parents:
        node = target.get(part)
        if not isinstance(node, dict):
            node = {} if node is None else {"source": node} if isinstance(node, str) else node
            target[part] = node
        target = node
    target[leaf] = value


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _for_backend(fields: dict[str, Any]) -> dict[str, Any]:
    """Drop base backend sections that do not match the experiment's backend."""
    backend = fields.get("backend", "pytorch")
    backends = backend_registry.names()
    return {k: v for k, v in fields.items() if k not in backends or k == backend}


def _short_reason(exc: ValidationError) -> str:
    from llem_ray.config.loader import error_message

    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    msg = error_message(first)
    return f"{loc}: {msg}" if loc else msg


def _grid_size(base: dict[str, Any], sweep: dict[str, list[Any]]) -> int:
    """How many points `_grid` yields, counted without enumerating them."""
    backend_names = backend_registry.names()
    scoped = [k for k in sweep if k.split(".")[0] in backend_names]
    others = math.prod(len(v) for k, v in sweep.items() if k not in scoped and k != "backend")
    backends = sweep.get("backend", [base.get("backend", "pytorch")])
    return others * sum(math.prod(len(sweep[k]) for k in scoped if k.split(".")[0] == b) for b in backends)


def _grid(base: dict[str, Any], sweep: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every point of the grid as {path: value}, universal keys first, then the point's backend keys."""
    backend_names = backend_registry.names()
    universal = sorted(k for k in sweep if k.split(".")[0] not in backend_names)
    scoped = sorted(k for k in sweep if k.split(".")[0] in backend_names)
    points: list[dict[str, Any]] = []
    for combo in itertools.product(*(sweep[k] for k in universal)):
        point = dict(zip(universal, combo))
        backend = point.get("backend", base.get("backend", "pytorch"))
        own = [k for k in scoped if k.split(".")[0] == backend]
        for scoped_combo in itertools.product(*(sweep[k] for k in own)):
            points.append({**point, **dict(zip(own, scoped_combo))})
    return points


def expand_study(raw: dict[str, Any], source: str = "<study>") -> StudyConfig:
    """Resolve a study document into a validated StudyConfig. Raises ConfigError naming source and field."""
    from llem_ray.config.loader import format_validation_error

    base = {k: v for k, v in raw.items() if k not in STUDY_KEYS}
    sweep = raw.get("sweep") or {}
    explicit = raw.get("experiments") or []
    if not isinstance(sweep, dict):
        raise ConfigError(f"{source}: sweep: must be a mapping of field paths to lists")
    if not isinstance(explicit, list):
        raise ConfigError(f"{source}: experiments: must be a list of experiment mappings")
    for key, values in sweep.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{source}: sweep.{key}: must be a non-empty list")
        _check_path(str(key), source)
    planned = (_grid_size(base, sweep) if sweep else 0) + len(explicit)
    if planned > MAX_EXPERIMENTS:
        field = "sweep" if sweep else "experiments"
        raise ConfigError(f"{source}: {field}: {planned:,} experiments; the limit is {MAX_EXPERIMENTS:,}")

    experiments: list[ExperimentConfig] = []
    skipped: list[SkippedPoint] = []
    if sweep:
        for point in _grid(base, sweep):
            fields = copy.deepcopy(base)
            for path, value in point.items():
                _set_path(fields, path, value)
            try:
                experiments.append(ExperimentConfig.model_validate(_for_backend(fields)))
            except ValidationError as exc:
                skipped.append(SkippedPoint(params=point, reason=_short_reason(exc)))
    for i, entry in enumerate(explicit):
        if not isinstance(entry, dict):
            raise ConfigError(f"{source}: experiments[{i}]: must be a mapping, got {type(entry).__name__}")
        try:
            experiments.append(ExperimentConfig.model_validate(_for_backend(_deep_merge(base, entry))))
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, source, prefix=f"experiments[{i}]")) from exc
    if not experiments:
        reasons = "; ".join(s.reason for s in skipped[:3])
        raise ConfigError(f"{source}: the study has no valid experiment ({len(skipped)} skipped: {reasons})")

    fields = {
        "name": str(raw.get("study_name") or raw.get("name") or "study"),
        "experiments": experiments,
        "execution": raw.get("execution") or {},
        "runtime_envs": raw.get("runtime_envs") or {},
        "skipped": skipped,
    }
    if raw.get("output_dir"):  # unset: the user config's output.results_dir (loader)
        fields["output_dir"] = str(raw["output_dir"])
    try:
        return StudyConfig.model_validate(fields)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from exc
