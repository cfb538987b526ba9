"""Table columns derived from pydantic models: one declaration per field, dotted names, pyarrow types.

A model's fields become columns by walking its annotations: a nested model's fields are named
`<field>.<sub-field>` (`latency.ttft.p50_ms`), top-level fields keep their names
(`energy_per_output_token_j`). The pyarrow type comes from the annotation (`None` allowed
everywhere): bool -> bool, int -> int64, float -> float64, str / Literal of str -> string,
datetime -> timestamp[us, UTC], list / tuple of one scalar type -> list of it; a dict, `Any` or a
union of several types is stored as a JSON string. A field whose annotation maps to none of these
raises TypeError when the schema is built (at import of results.table), so a new field cannot
silently miss the table; one that should not be a column says so with `Annotated[..., NOT_A_COLUMN]`.

`Metric` marks a field as a summary metric (results.aggregate) and, with `progress`, as a column of
the table printed when a study ends (cluster.progress). On a nested model's field it names the
sub-fields it applies to (`of`), so a shared model (Percentiles) is marked where it is used.

Nested dicts become dotted keys through the one flatten helper, results/flatten.flatten_dotted.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Union

from pydantic import BaseModel

if TYPE_CHECKING:
    import pyarrow as pa

SummaryStat = Literal["ci", "mean", "max", "any"]


@dataclass(frozen=True)
class Metric:
    """A summary metric, declared on its result field: `Annotated[float | None, Metric("ci")]`.

    `summary`: over a configuration's cycles, "ci" gives columns `<name>_n`, `_mean`, `_std`, `_cv`,
    `_ci95_low`, `_ci95_high` (mean, sample std, std / |mean|, 95 % bootstrap CI); "mean" gives
    `<name>_mean`; "max" `<name>_max`; "any" (booleans) `<name>_any`, True if any cycle was.
    `progress`: header of the field's column in the end-of-study table (mean over cycles, plus
    "CV %" for "ci" metrics), formatted with `progress_format`. `of`: on a field holding a model,
    the sub-fields the marker applies to (each then a metric of its own dotted name).
    """

    summary: SummaryStat
    progress: str | None = None
    progress_format: str = ".4g"
    of: tuple[str, ...] = ()


class _NotAColumn:
    def __repr__(self) -> str:
        return "NOT_A_COLUMN"


NOT_A_COLUMN = _NotAColumn()
"""Marker (`Annotated[..., NOT_A_COLUMN]`): the field, and a nested model's sub-fields, get no column."""


@dataclass(frozen=True)
class Column:
    """One column: dotted `name`, its pyarrow `type`, the attribute `path` to its value, and whether
    the value is stored as JSON (`as_json`); `metric` when the field is a summary metric."""

    name: str
    type: pa.DataType
    path: tuple[str, ...]
    as_json: bool = False
    metric: Metric | None = None

    def value(self, source: Any) -> Any:
        """This column's value in `source` (a model instance or a dict, read along `path`); None where
        a step is missing or None. JSON columns hold `json.dumps` of the value (None stays None)."""
        for step in self.path:
            if source is None:
                return None
            source = source.get(step) if isinstance(source, Mapping) else getattr(source, step, None)
        if isinstance(source, BaseModel):
            source = source.model_dump(mode="json")
        if self.as_json and source is not None:
            return json.dumps(source, sort_keys=True)
        if isinstance(source, tuple):
            return list(source)
        return source


def _strip_none(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def _scalar_type(annotation: Any) -> pa.DataType | None:
    import pyarrow as pa  # here, not at import: result models (results.schema) load in processes without pyarrow

    if typing.get_origin(annotation) is Literal:
        kinds = {type(v) for v in typing.get_args(annotation)}
        return _scalar_type(kinds.pop()) if len(kinds) == 1 else None
    scalars = {
        bool: pa.bool_(),
        int: pa.int64(),
        float: pa.float64(),
        str: pa.string(),
        datetime: pa.timestamp("us", tz="UTC"),
    }
    return scalars.get(annotation)


def _arrow_type(annotation: Any, where: str) -> tuple[pa.DataType, bool]:
    """(pyarrow type, stored as JSON) of a leaf annotation; raises TypeError for an unmapped one."""
    import pyarrow as pa

    options = _strip_none(annotation)
    if len(options) != 1:
        return pa.string(), True
    (annotation,) = options
    scalar = _scalar_type(annotation)
    if scalar is not None:
        return scalar, False
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (list, tuple) and args:
        items = {a for a in args if a is not Ellipsis}
        item = _scalar_type(items.pop()) if len(items) == 1 else None
        if item is not None:
            return pa.list_(item), False
    if annotation is Any or origin is dict or annotation is dict:
        return pa.string(), True
    raise TypeError(f"{where}: no column type for {annotation!r} (mark it NOT_A_COLUMN, or use a mapped type)")


def _model_of(annotation: Any) -> type[BaseModel] | None:
    options = _strip_none(annotation)
    if len(options) == 1 and isinstance(options[0], type) and issubclass(options[0], BaseModel):
        return options[0]
    return None


def model_columns(
    model: type[BaseModel], prefix: str = "", path: tuple[str, ...] = (), inherited: Metric | None = None
) -> list[Column]:
    """The columns of `model`'s fields in declaration order, named `prefix + dotted path`.

    `inherited`: a parent's `Metric(of=...)` applied to the fields it names. Raises TypeError for a
    field with no column type and ValueError for a `Metric.of` naming no field of the nested model.
    """
    columns: list[Column] = []
    for name, info in model.model_fields.items():
        if any(m is NOT_A_COLUMN for m in info.metadata):
            continue
        metric = next((m for m in info.metadata if isinstance(m, Metric)), None)
        if inherited is not None and name in inherited.of:
            metric = Metric(inherited.summary, inherited.progress, inherited.progress_format)
        nested = _model_of(info.annotation)
        if nested is not None:
            if metric is not None and set(metric.of) - set(nested.model_fields):
                raise ValueError(f"{model.__name__}.{name}: Metric.of names no field of {nested.__name__}: {metric.of}")
            columns += model_columns(nested, f"{prefix}{name}.", (*path, name), metric)
            continue
        arrow, as_json = _arrow_type(info.annotation, f"{model.__name__}.{name}")
        columns.append(Column(f"{prefix}{name}", arrow, (*path, name), as_json, metric))
    return columns
