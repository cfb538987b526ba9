"""Introspection of the config models (CFG-26, INF-11): one walk over the pydantic models feeds the
configuration reference (`docs/configuration.md`), test-value generation and backend routing.

`reference_rows()` lists every field with its dotted path, type, default, constraints, the backend
it routes to, and description. `render_markdown()` is the generated reference; a test checks the
committed docs file equals it (regenerate with `python -m llem_ray.config.introspection > docs/configuration.md`).
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from llem_ray.backends import registry as backend_registry
from llem_ray.config import limits
from llem_ray.config.experiment import ExperimentConfig
from llem_ray.config.study import ExecutionConfig, RuntimeEnvConfig
from llem_ray.config.user import UserConfig


@dataclass(frozen=True)
class FieldRow:
    path: str
    type: str
    default: str
    constraints: str
    backend: str
    description: str


_MODULE_PATH = re.compile(r"\b(?:[a-z_][a-z0-9_]*\.)+(?=[A-Za-z_])")
"""A dotted module path in front of a name (`typing.`, `llem_ray.backends.vllm.config.`)."""


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if not typing.get_args(annotation) else None
    text = text or str(annotation).replace("NoneType", "None")
    return _MODULE_PATH.sub("", text)


def _nested_model(info: FieldInfo) -> type[BaseModel] | None:
    for candidate in (info.annotation, *typing.get_args(info.annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _constraints(info: FieldInfo) -> str:
    parts = []
    for meta in info.metadata:
        for attr in ("gt", "ge", "lt", "le", "min_length", "max_length"):
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(f"{attr}={value}")
    return ", ".join(parts)


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    if info.default_factory is not None:
        return "(sub-config)" if _nested_model(info) else repr(info.default_factory())
    return repr(info.default)


def _walk(model: type[BaseModel], prefix: str, backend: str) -> list[FieldRow]:
    rows: list[FieldRow] = []
    backends = backend_registry.names()
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        routed = name if not prefix and name in backends else backend
        rows.append(
            FieldRow(
                path,
                _type_name(info.annotation).replace("|", "\\|"),
                _default(info).replace("|", "\\|"),
                _constraints(info),
                routed,
                (info.description or "").replace("|", "\\|"),
            )
        )
        nested = _nested_model(info)
        if nested is not None:
            rows.extend(_walk(nested, f"{path}.", routed))
    return rows


def reference_rows() -> dict[str, list[FieldRow]]:
    """Every documented field, grouped by document section (experiment, execution, runtime_envs, user config)."""
    return {
        "Experiment fields (top level of an experiment YAML, or the base of a study)": _walk(
            ExperimentConfig, "", "all"
        ),
        "Study `execution:` block": _walk(ExecutionConfig, "execution.", "all"),
        "Study `runtime_envs.<backend>:` block": _walk(RuntimeEnvConfig, "runtime_envs.<backend>.", "all"),
        "User config (`~/.config/llenergymeasure/config.yaml`, or `LLEM_CONFIG_PATH`)": _walk(UserConfig, "", "all"),
    }


def backend_fields(backend: str) -> list[str]:
    """Dotted sweep keys valid for `backend`'s section (backend routing)."""
    return [f"{backend}.{name}" for name in backend_registry.spec(backend).section.model_fields]


def render_markdown() -> str:
    """The configuration reference as Markdown (the content of docs/configuration.md)."""
    out = [
        "# Configuration reference",
        "",
        "Generated from the pydantic models by `python -m llem_ray.config.introspection`; "
        "a test fails when this file is out of date. Units are in field names (`_s` seconds, `_j` joules).",
        "",
        "## Backend support (declared by each backend's spec: `llem_ray/backends/<name>/__init__.py`)",
        "",
        "| backend | precisions | decoding modes | scenarios |",
        "|---|---|---|---|",
    ]
    out += [
        f"| {s.name} | {', '.join(s.precisions)} | {', '.join(s.decoding_modes)} | {', '.join(s.scenarios)} |"
        for s in backend_registry.builtin_specs()
    ]
    for title, rows in reference_rows().items():
        out += [
            "",
            f"## {title}",
            "",
            "| field | type | default | constraints | backend | description |",
            "|---|---|---|---|---|---|",
        ]
        out += [
            f"| `{r.path}` | `{r.type}` | `{r.default}` | {r.constraints} | {r.backend} | {r.description} |"
            for r in rows
        ]
    out += [
        "",
        "## Study documents",
        "",
        "A study YAML has the experiment fields above at its top level (the base shared by every experiment) "
        "plus `study_name`, `output_dir`, `sweep:`, `experiments:`, `execution:` and `runtime_envs:`. "
        "`sweep:` maps field paths to non-empty lists: plain paths (`precision`, `decoder.temperature`) vary "
        "every experiment; paths starting with a backend (`pytorch.batch_size`) vary only that backend's "
        "experiments. Grid points that fail validation are skipped and listed with their reason. "
        "`serving.request_rate_req_s` and `serving.slo.ttft_ms` / `serving.slo.tpot_ms` sweep like any dotted "
        "field: a study over request rates gives one load curve per configuration in `llem report`. "
        "See `configs/` for one example of each form.",
        "",
        *_limits_section(),
        "## The user config",
        "",
        "Machine-local and optional (a missing file means the defaults above). Environment variables win over "
        "it: `LLEM_RUNNER_<BACKEND>`, `LLEM_CARBON_INTENSITY`, `LLEM_DATACENTER_PUE`, `LLEM_NO_PROMPT`. A study "
        "file wins over its `execution:` gaps and `output.results_dir`. A runner `docker:<image>` runs that "
        "backend's study experiments in the image (the study's Ray runtime_env gets `image_uri`; Ray starts the "
        "actors with podman, and the image needs Ray and llem_ray); a study that gives the backend its own "
        "`runtime_envs:` entry as well is refused, and `llem run experiment.yaml` (in-process) refuses such a "
        "backend: run it with `python -m llem_ray.study experiment.yaml`.",
        "",
    ]
    return "\n".join(out)


def _limits_section() -> list[str]:
    """What a document may hold beyond the per-field constraints above (`llem_ray/config/limits.py`)."""
    return [
        "## Limits (`llem_ray/config/limits.py`)",
        "",
        'Every value is taken as typed: `true` is not 1, `"4"` is not 4 (an integer may stand for a float), '
        "and every number must be finite (`.inf`, `.nan` and `1e+400` are refused). A file that breaks a limit "
        "is a configuration error (exit 2) naming the file and the field, before anything runs.",
        "",
        f"- a file: at most {limits.MAX_CONFIG_BYTES:,} bytes, nested at most {limits.MAX_YAML_DEPTH} levels, "
        f"at most {limits.MAX_YAML_NODES:,} values with its YAML aliases expanded; a key given twice in one "
        "mapping is refused (merge keys `<<` may be overridden); integers fit in 64 bits;",
        f"- a study: at most {limits.MAX_EXPERIMENTS:,} experiments (grid points and explicit entries, counted "
        f"before they are built), {limits.MAX_CYCLES:,} cycles and {limits.MAX_RUNS:,} runs (experiments x "
        "cycles, checked before anything is planned);",
        f"- a synthetic workload: at most {limits.MAX_WORKLOAD_TOKENS:,} prompt tokens "
        "(`n` x `min(dataset.input_len_tokens, max_input_tokens)`);",
        "- `output_dir` never under `/proc`, `/sys` or `/dev`; `execution.webhook_url` http(s) with a host; "
        "names, `model`, `dataset.source` and `lora.adapter` without control characters (NUL, escape sequences).",
        "",
        "Pre-flight (exit 1, every problem at once, before Ray starts or the experiment loads) checks what "
        "needs the file system: dataset files exist, are files and their first records parse; local model "
        "and adapter paths hold a model; the output directory can be written.",
        "",
    ]


if __name__ == "__main__":
    print(render_markdown(), end="")
