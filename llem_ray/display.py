"""Plain-text rendering for the CLI (CLI-08): tables and the experiment and study previews of `--dry-run`.

Results go to stdout, progress and notices to stderr (CLI-09). No colour, no Rich: output stays
readable in logs and pipes.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence, Set
from typing import Any

from llem_ray.cluster.plan import WorkItem
from llem_ray.config.experiment import ExperimentConfig, measurement_config_hash
from llem_ray.config.study import StudyConfig
from llem_ray.measure.vram import estimate_vram_gb
from llem_ray.results.flatten import flatten_dotted


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


def varying_fields(experiments: Sequence[ExperimentConfig]) -> list[str]:
    """Dotted paths whose value differs between experiments, in a stable order."""
    flats = [flatten_dotted(e.model_dump(mode="json", exclude={"name", "output_dir"})) for e in experiments]
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
        ("dataset", config.dataset.source if config.serving else f"{config.dataset.source}, n={config.n}"),
        ("scenario", f"serving: {config.serving.describe()}" if config.serving else config.scenario),
        ("batch size", config.batch_size),
        ("tokens in / out", f"{config.max_input_tokens} / {config.max_output_tokens}"),
        ("decoding", config.decoder.mode),
        ("GPUs / CPUs", f"{config.resources.gpus} / {config.resources.cpus}"),
        ("VRAM estimate (GB)", _vram(config)),
        ("measurement_config_hash", measurement_config_hash(config)),
        (
            "results",
            f"{config.output_dir}/{config.display_name()}_<UTC timestamp>/" if config.output_dir else "not saved",
        ),
    ]
    return "Experiment config is valid.\n" + format_table(["field", "value"], rows)


def preview_study(
    study: StudyConfig,
    items: Sequence[WorkItem],
    protocol: Mapping[str, Any],
    notes: Sequence[str],
    target: str,
    completed: Set[str] = frozenset(),
) -> str:
    """Dry-run text of a study, the same from every entry point (the driver prints it).

    `items` are the planned runs in run order, `protocol` the effective execution settings (the
    StudyResult's measurement_protocol), `notes` the planner's remarks, `target` where results would
    go, `completed` the keys of runs a resumed directory already holds (they are not listed). Shows
    counts and the design hash, the settings, a table of the fields that vary between
    configurations with a VRAM estimate each, skipped grid points, and the first 50 runs to run, in order.
    """
    configs = list({i.config_hash: i.config for i in items}.values())
    fields = varying_fields(configs)
    flats = [flatten_dotted(e.model_dump(mode="json")) for e in configs]
    rows = [
        [n + 1, e.display_name(), *(f.get(k) for k in fields), _vram(e)] for n, (e, f) in enumerate(zip(configs, flats))
    ]
    cycles = max((i.cycle for i in items), default=0)
    settings = (
        f"order {protocol['cycle_order']}; gaps: config {protocol['config_gap_seconds']:g} s, "
        f"cycle {protocol['cycle_gap_seconds']:g} s; timeout {protocol['timeout_s']:g} s; "
        f"retries {protocol['max_retries']}; isolation {protocol['isolation']}"
        + ("; cold start (force_cold_start)" if protocol.get("force_cold_start") else "")
    )
    parts = [
        f"Study '{study.name}' is valid: {len(configs)} configuration(s) x {cycles} cycle(s) = {len(items)} run(s); "
        f"{len(study.skipped)} grid point(s) skipped; study_design_hash {study.study_design_hash}",
        settings,
        f"results: {target}",
        format_table(["#", "name", *fields, "VRAM GB"], rows),
        *(f"note: {note}" for note in notes),
    ]
    starts = protocol.get("cycle_starts") or {}
    if starts:
        parts.append("cycle starts: " + ", ".join(f"{cycle} at {when}" for cycle, when in sorted(starts.items())))
    if study.skipped:
        parts.append("Skipped grid points:")
        parts += [f"  - {s.params}: {s.reason}" for s in study.skipped]
    left = [i for i in items if i.key not in completed]
    if completed:
        parts.append(f"Left to run: {len(left)} of {len(items)} ({len(items) - len(left)} completed there)")
    parts.append("Run order:")
    parts += [
        f"{i.order_index:>5}  cycle {i.cycle:<3} {i.config_hash}  {i.name}  gpus={i.config.resources.gpus}"
        for i in left[:50]
    ]
    if len(left) > 50:
        parts.append(f"... and {len(left) - 50} more")
    return "\n".join(parts)
