"""Plain-text rendering for the CLI (CLI-08): tables and the study preview of `--dry-run`.

Results go to stdout, progress and notices to stderr (CLI-09). No colour, no Rich: output stays
readable in logs and pipes.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from llem_ray.config.experiment import ExperimentConfig, measurement_config_hash
from llem_ray.config.study import StudyConfig
from llem_ray.measure.vram import estimate_vram_gb


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A left-aligned text table with a header rule."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def notice(message: str, quiet: bool = False) -> None:
    """A one-line notice on stderr (suppressed by --quiet)."""
    if not quiet:
        print(message, file=sys.stderr)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def varying_fields(experiments: Sequence[ExperimentConfig]) -> list[str]:
    """Dotted paths whose value differs between experiments, in a stable order."""
    flats = [_flatten(e.model_dump(mode="json", exclude={"name", "output_dir"})) for e in experiments]
    keys = sorted({k for f in flats for k in f})
    return [k for k in keys if len({repr(f.get(k)) for f in flats}) > 1]


def _vram(config: ExperimentConfig) -> str:
    gb = estimate_vram_gb(config)
    return "unknown" if gb is None else f"{gb:.2f}"


def preview_experiment(config: ExperimentConfig) -> str:
    """Dry-run text of one experiment: identity, key settings, VRAM estimate."""
    rows = [
        ("name", config.display_name()),
        ("model", f"{config.model} ({config.weights} weights)"),
        ("backend / precision", f"{config.backend} / {config.precision}"),
        ("dataset", f"{config.dataset.source}, n={config.n}"),
        ("batch size", config.batch_size),
        ("tokens in / out", f"{config.max_input_tokens} / {config.max_output_tokens}"),
        ("decoding", config.decoder.mode),
        ("GPUs / CPUs", f"{config.resources.gpus} / {config.resources.cpus}"),
        ("VRAM estimate (GB)", _vram(config)),
        ("measurement_config_hash", measurement_config_hash(config)),
    ]
    return "Experiment config is valid.\n" + format_table(["field", "value"], rows)


def preview_study(study: StudyConfig, n_cycles: int) -> str:
    """Dry-run text of a study: counts, a table of the varying fields, skipped points with reasons."""
    exps = study.experiments
    fields = varying_fields(exps)
    flats = [_flatten(e.model_dump(mode="json")) for e in exps]
    headers = ["#", "name", *fields, "VRAM GB"]
    rows = [[i + 1, e.display_name(), *(f.get(k) for k in fields), _vram(e)] for i, (e, f) in enumerate(zip(exps, flats))]
    parts = [
        f"Study '{study.name}' is valid: {len(exps)} experiment(s) x {n_cycles} cycle(s) = "
        f"{len(exps) * n_cycles} run(s); {len(study.skipped)} grid point(s) skipped; "
        f"study_design_hash {study.study_design_hash}",
        format_table(headers, rows),
    ]
    if study.skipped:
        parts.append("Skipped grid points:")
        parts += [f"  - {s.params}: {s.reason}" for s in study.skipped]
    return "\n".join(parts)
