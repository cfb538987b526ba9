"""`llem report`: the HTML report of a finished or partial study (results/report.py, report_plots.py)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from llem_ray.cli import app
from llem_ray.errors import ConfigError
from llem_ray.results.manifest import (
    MANIFEST_FILE,
    AttemptRecord,
    ManifestEntry,
    ManifestWriter,
    StudyManifest,
    export_manifest,
    utc_now,
)
from llem_ray.results.persistence import save_experiment
from llem_ray.results.report import load_study, write_report
from llem_ray.results.report_plots import pareto_front
from tests.result_factory import make_result, make_timeseries

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.links += [v for k, v in attrs if k in ("src", "href") and v]


def links_of(html_path: Path) -> list[str]:
    parser = _Links()
    parser.feed(html_path.read_text(encoding="utf-8"))
    return parser.links


def assert_self_contained(html_path: Path) -> list[Path]:
    """Every link is relative and resolves to a non-empty file next to the page; returns the PNGs."""
    links = links_of(html_path)
    assert links, "the report links nothing"
    for link in links:
        assert not re.match(r"^[a-z]+:", link) and not link.startswith("/"), f"non-relative link {link}"
        target = html_path.parent / link
        assert target.is_file() and target.stat().st_size > 0, f"link {link} does not resolve"
    pngs = [html_path.parent / link for link in links if link.endswith(".png")]
    for png in pngs:
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 2000, f"{png.name} is empty"
    return pngs


def build_study(root: Path, plan: list[dict], name: str = "toy") -> Path:
    """A study directory as the engine lays it out: manifest + experiments/<key>/<run>/ for completed entries.

    Each plan item: {hash, cycle, batch, status, j, tps, [error], [window]}.
    """
    study = root / name
    entries = [
        ManifestEntry(
            key=f"{p['hash']}-c{p['cycle']}",
            order_index=i,
            name=f"tiny-llama_pytorch_bf16_bs{p['batch']}",
            measurement_config_hash=p["hash"],
            cycle=p["cycle"],
            backend="pytorch",
        )
        for i, p in enumerate(plan)
    ]
    writer = ManifestWriter.create(
        study / MANIFEST_FILE, StudyManifest(study_name=name, study_design_hash="d" * 16, entries=entries)
    )
    for p, entry in zip(plan, entries):
        record = AttemptRecord(attempt=1, dispatched_at=utc_now())
        if p["status"] == "completed":
            window = p.get("window")
            result = make_result(
                config_hash=p["hash"],
                cycle=p["cycle"],
                batch_size=p["batch"],
                j_per_token=p["j"],
                tokens_per_s=p["tps"],
                methodology="steady_state" if window else "total",
                window=window,
                warnings=p.get("warnings"),
            )
            run_dir = save_experiment(result, make_timeseries(), study / "experiments" / entry.key)
            writer.mark_completed(entry.key, str(run_dir.relative_to(study)), record)
        elif p["status"] == "failed":
            writer.mark_failed(entry.key, p.get("error", "boom"), record)
        elif p["status"] == "running":
            writer.mark_running(entry.key, record)
    export_manifest(study)  # what the results actor writes at the end of a study
    return study


FULL_PLAN = [
    {
        "hash": h,
        "cycle": c,
        "batch": b,
        "status": "completed",
        "j": j * (1 + 0.02 * c),
        "tps": t * (1 - 0.01 * c),
        "window": (2.0, 55.0) if b > 1 else None,
        "warnings": ["measured window 9.00 s < 10 s: energy is noisy and biased low"] if b == 1 else None,
    }
    for h, b, j, t in (("a" * 16, 1, 1.6, 90.0), ("b" * 16, 8, 0.22, 690.0), ("c" * 16, 32, 0.066, 2600.0))
    for c in (1, 2, 3)
]


def test_report_of_a_complete_study_renders_every_part(tmp_path):
    study = build_study(tmp_path, FULL_PLAN)
    page = write_report(study)
    assert page == study / "report" / "report.html"
    text = page.read_text(encoding="utf-8")
    pngs = assert_self_contained(page)
    assert {p.name for p in pngs} >= {"batch_scaling.png", "pareto.png", "timeline_1.png", "timeline_3.png"}
    assert "Complete: all 9 entries" in text
    assert "measured window 9.00 s &lt; 10 s" in text  # warnings table, escaped
    assert "1, 2, 3" in text  # the warning's cycles
    assert "summary.csv" in links_of(page) and (page.parent / "summary.csv").read_text().count("\n") == 4
    assert "steady_state" in text and "total" in text


def test_partial_study_renders_and_names_what_is_missing(tmp_path):
    plan = [dict(p) for p in FULL_PLAN[:6]]
    plan[4] = {**plan[4], "status": "failed", "error": "BackendError: CUDA out of memory"}
    plan[5] = {**plan[5], "status": "pending"}
    plan.append({"hash": "d" * 16, "cycle": 1, "batch": 64, "status": "running", "j": 0, "tps": 0})
    study = build_study(tmp_path, plan)
    page = write_report(study)
    text = page.read_text(encoding="utf-8")
    assert_self_contained(page)
    assert "Partial study: 4 of 7 entries have a result; 3 missing." in text
    assert "CUDA out of memory" in text and "pending" in text and "running" in text
    data = load_study(study)
    assert sorted((m.status, m.cycle) for m in data.missing) == [("failed", 2), ("pending", 3), ("running", 1)]


def test_one_cycle_configuration_says_it_has_no_interval(tmp_path):
    study = build_study(tmp_path, [p for p in FULL_PLAN if p["cycle"] == 1])
    text = write_report(study).read_text(encoding="utf-8")
    assert "one cycle: no confidence interval" in text


def test_unreadable_result_is_reported_missing_with_the_reason(tmp_path):
    study = build_study(tmp_path, FULL_PLAN[:2])
    manifest = json.loads((study / MANIFEST_FILE).read_text())
    result_json = study / manifest["entries"][1]["result_path"] / "result.json"
    data = json.loads(result_json.read_text())
    result_json.write_text(json.dumps({**data, "schema_version": "9.0"}))
    text = write_report(study).read_text(encoding="utf-8")
    assert "schema_version 9.0" in text and "1 of 2 entries" in text


def test_study_without_energy_renders_and_says_why(tmp_path):
    plan = [{**p, "j": None} for p in FULL_PLAN[:3]]
    study = build_study(tmp_path, plan)
    page = write_report(study)
    assert "No energy was measured" in page.read_text(encoding="utf-8")
    assert not (page.parent / "batch_scaling.png").exists()
    assert_self_contained(page)


def test_directory_without_manifest_reports_what_it_finds(tmp_path):
    for cycle in (1, 2):
        save_experiment(make_result(cycle=cycle), make_timeseries(), tmp_path / "runs")
    text = write_report(tmp_path / "runs").read_text(encoding="utf-8")
    assert "no manifest.json" in text and "2 results, 1 configurations" in text


def test_nothing_to_report_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="nothing to report"):
        write_report(tmp_path)
    with pytest.raises(ConfigError, match="not a directory"):
        write_report(tmp_path / "absent")


def test_pareto_front_keeps_only_unbeaten_points():
    points = [(100.0, 1.0), (200.0, 0.5), (150.0, 0.8), (300.0, 0.6), (50.0, 0.4)]
    # (150, 0.8) and (100, 1.0) are beaten by (200, 0.5); the rest trade speed for energy
    assert pareto_front(points) == [4, 1, 3]


def test_cli_report_prints_the_path_and_exits_2_on_a_bad_directory(tmp_path):
    study = build_study(tmp_path, FULL_PLAN[:2])
    runner = CliRunner()
    ok = runner.invoke(app, ["report", str(study), "-o", str(tmp_path / "out")])
    assert ok.exit_code == 0, ok.output
    assert "report:" in ok.output and (tmp_path / "out" / "report.html").is_file()
    bad = runner.invoke(app, ["report", str(tmp_path / "absent")])
    assert bad.exit_code == 2 and "not a directory" in bad.output


ENGINE_STUDY = """
study_name: report-e2e
output_dir: {out}
model: llem/tiny-llama
dataset: synthetic
n: 10
max_input_tokens: 16
max_output_tokens: 24
warmup: {{n_warmup: 1, thermal_floor_s: 0}}
baseline: {{enabled: false}}
energy: {{sample_hz: 100}}
sweep:
  pytorch.batch_size: [1, 4]
execution: {{n_cycles: 2, config_gap_seconds: 0, cycle_gap_seconds: 0, timeout_s: 300}}
"""


@pytest.fixture(scope="module")
def engine_study(tmp_path_factory):
    """A real study: Ray engine, real PyTorch backend on CPU, tiny random Llama, 2 configs x 2 cycles.

    The 'wave' meter plugin (tests/report_meter.py) stands in for NVML, so energy is measured.
    24 new tokens at 100 Hz: batch 4's steady-state window (~0.2 s here) holds well over the 2 power
    samples it needs (with 8 tokens at 50 Hz it held 2-3, and CI once fell back to 'total').
    """
    from llem_ray.api import run_study

    root = tmp_path_factory.mktemp("engine")
    (root / "study.yaml").write_text(ENGINE_STUDY.format(out=root / "out"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLEM_PLUGINS", "tests.report_meter")
        result = run_study(root / "study.yaml", address="local")
    return Path(result.output_dir), result


@pytest.mark.ray
def test_report_of_a_study_run_by_the_engine(engine_study, tmp_path):
    study_dir, study_result = engine_study
    assert study_result.summary.completed == 4
    page = write_report(study_dir, tmp_path / "report")
    pngs = assert_self_contained(page)
    assert {p.name for p in pngs} == {"batch_scaling.png", "pareto.png", "timeline_1.png", "timeline_2.png"}
    text = page.read_text(encoding="utf-8")
    assert "Complete: all 4 entries" in text and "4 results, 2 configurations" in text
    data = load_study(study_dir)
    by_batch = {r.batch_size: r for r, _ in data.results}
    # batch 4 over 10 prompts: batches of 4, 4, 2 -> the steady state ends before the partial batch
    bs4 = by_batch[4]
    assert bs4.measurement_methodology == "steady_state"
    assert bs4.steady_state_window[1] < bs4.duration_s
    assert any("steady-state window" in w and "< 30 s" in w for w in bs4.measurement_warnings)
    summary = pq.read_table(tmp_path / "report" / "summary.parquet").to_pylist()
    rows = {r["batch_size"]: r for r in summary}
    assert len(summary) == 2 and rows[4]["energy_per_output_token_j_n"] == 2
    assert rows[4]["energy_per_output_token_j_ci95_low"] <= rows[4]["energy_per_output_token_j_mean"]


def test_a_host_bound_configuration_is_marked_in_the_report(tmp_path):
    plan = [{"hash": "h" * 16, "cycle": c, "batch": 16, "status": "completed", "j": 0.3, "tps": 1200.0} for c in (1, 2)]
    study = build_study(tmp_path, plan)
    for result_file in study.rglob("result.json"):  # as measure/metrics.host_bound would have flagged them
        data = json.loads(result_file.read_text())
        data["host_bound"] = True
        result_file.write_text(json.dumps(data))
    text = write_report(study).read_text(encoding="utf-8")
    assert text.count(">host-bound</span>") == 1  # one configuration, marked once
    unmarked = write_report(build_study(tmp_path, FULL_PLAN, name="clean")).read_text(encoding="utf-8")
    assert ">host-bound</span>" not in unmarked
