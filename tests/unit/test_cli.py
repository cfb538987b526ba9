"""What a newcomer meets first (issue 14): `llem run` saves every result, and `llem run study.yaml` and
`python -m llem_ray.study` are one command with one option set and one dry-run plan."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from llem_ray import study as study_entry
from llem_ray.cli import app, run_command
from llem_ray.config.experiment import ExperimentConfig
from llem_ray.errors import EXIT_CONFIG
from llem_ray.results.persistence import RESULT_FILE, TIMESERIES_FILE, from_json
from llem_ray.runner import RunFlags

ROOT = Path(__file__).resolve().parents[2]
QUICK = {
    "dataset": "synthetic",
    "n": 2,
    "max_output_tokens": 4,
    "prefill_split": False,
    "warmup": {"n_warmup": 0, "thermal_floor_s": 0},
    "baseline": {"enabled": False},
    "passthrough_kwargs": {"fake_duration_s": 0.01},
}


def _complete(directory: Path) -> bool:
    return (directory / RESULT_FILE).is_file() and (directory / TIMESERIES_FILE).is_file()


def _results_line(output: str) -> Path:
    (line,) = [line for line in output.splitlines() if line.startswith("results: ")]
    return Path(line.removeprefix("results: "))


def test_llem_run_in_a_fresh_directory_leaves_a_complete_result_under_results(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the README's first command, on the real tiny model: nothing injected
    out = CliRunner().invoke(app, ["run", "--quiet"])
    assert out.exit_code == 0, out.output
    (saved,) = (tmp_path / "results").iterdir()
    assert _complete(saved) and saved.name.startswith("tiny-llama_pytorch_bf16_bs4_")
    assert _results_line(out.stdout) == saved, "the command must say where the result is"
    assert from_json(saved / RESULT_FILE).output_tokens == 16 * 32


def test_results_go_under_the_user_configs_results_dir_and_never_overwrite(fakes, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "mine"
    user = tmp_path / "config.yaml"
    user.write_text(yaml.safe_dump({"output": {"results_dir": str(mine)}}))
    monkeypatch.setenv("LLEM_CONFIG_PATH", str(user))
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(yaml.safe_dump({**QUICK, "backend": "fake"}))
    runs = [CliRunner().invoke(app, ["run", str(experiment), "-q"]) for _ in range(2)]
    assert all(r.exit_code == 0 for r in runs), runs[0].output
    saved = sorted(mine.iterdir())
    assert len(saved) == 2 and all(_complete(d) for d in saved), "a second run overwrote the first"
    assert {_results_line(r.stdout) for r in runs} == set(saved)
    override = CliRunner().invoke(app, ["run", str(experiment), "-q", "--output", str(tmp_path / "there")])
    assert override.exit_code == 0 and _results_line(override.stdout).parent == tmp_path / "there"
    assert not (tmp_path / "results").exists()


def test_llem_config_says_where_results_go_and_which_runners_apply(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LLEM_RUNNER_VLLM", "docker:registry.example/vllm:1")
    out = CliRunner().invoke(app, ["config"])
    assert out.exit_code == 0, out.output
    assert f"results are saved under {tmp_path / 'results'}" in out.stdout
    assert "vllm study experiments run in the container image registry.example/vllm:1" in out.stdout


def test_a_dry_run_writes_nothing_and_says_where_results_would_go(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = CliRunner().invoke(app, ["run", "--dry-run"])
    assert out.exit_code == 0 and "results/tiny-llama_pytorch_bf16_bs4_<UTC timestamp>/" in out.stdout
    assert list(tmp_path.iterdir()) == []


def test_run_experiment_from_python_writes_nothing_without_output_dir(fakes, tmp_path, monkeypatch):
    from llem_ray import run_experiment

    monkeypatch.chdir(tmp_path)
    result = run_experiment(ExperimentConfig(**QUICK, backend="fake"))
    assert result.output_tokens == 8 and list(tmp_path.iterdir()) == []


# ---- one study command ------------------------------------------------------------------------------
def test_both_entry_points_parse_one_option_set():
    names = {p.name for p in run_command().params}
    assert names == {f.name for f in dataclasses.fields(RunFlags)}
    options = {opt for p in run_command().params for opt in p.opts}
    assert {"--at", "--address", "--output", "--resume", "--cycles", "--order", "--no-gaps", "--dry-run"} <= options


def _study_file(tmp_path: Path) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "grid",
                **{k: v for k, v in QUICK.items() if k != "passthrough_kwargs"},
                "sweep": {"pytorch.batch_size": [1, 2]},
                "execution": {"config_gap_seconds": 0, "cycle_gap_seconds": 0},
            }
        )
    )
    return path


def test_llem_run_and_the_study_module_print_the_same_plan(tmp_path, capsys):
    flags = [
        "--dry-run",
        "--cycles",
        "2",
        "--order",
        "shuffled",
        "--at",
        "02:00,03:00",
        "--address",
        "local",
        "--output",
        str(tmp_path / "out"),
    ]
    study = _study_file(tmp_path)
    via_llem = CliRunner().invoke(app, ["run", str(study), *flags])
    assert via_llem.exit_code == 0, via_llem.output
    assert study_entry.main([str(study), *flags]) == 0
    via_module = capsys.readouterr().out
    assert via_module == via_llem.stdout
    assert "2 configuration(s) x 2 cycle(s) = 4 run(s)" in via_module and "order shuffled" in via_module
    assert f"results: {tmp_path / 'out'}/grid_<UTC timestamp>/" in via_module and "cycle starts: 1 at" in via_module
    assert not (tmp_path / "out").exists()


def test_the_study_module_runs_an_experiment_yaml_as_a_study_with_experiment_flags(tmp_path, capsys):
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(yaml.safe_dump(QUICK))
    assert study_entry.main([str(experiment), "--dry-run", "--batch-size", "3", "--cycles", "1"]) == 0
    assert "tiny-llama_pytorch_bf16_bs3" in capsys.readouterr().out
    assert study_entry.main([str(_study_file(tmp_path)), "--dry-run", "--model", "llem/qwen2.5-0.5b"]) == EXIT_CONFIG
    assert "--model applies to experiment YAMLs only" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--order", "random"], "'random' is not one of"),
        (["--cycles", "0"], "greater than or equal to 1"),
        (["--no-such-flag"], "No such option"),
    ],
)
def test_the_study_module_refuses_bad_flags_like_llem_run(tmp_path, capsys, args, needle):
    study = _study_file(tmp_path)
    assert study_entry.main([str(study), "--dry-run", *args]) == EXIT_CONFIG
    assert needle in capsys.readouterr().err
    assert CliRunner().invoke(app, ["run", str(study), "--dry-run", *args]).exit_code == EXIT_CONFIG


def test_study_flags_on_an_experiment_are_refused(tmp_path):
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(yaml.safe_dump(QUICK))
    out = CliRunner().invoke(app, ["run", str(experiment), "--dry-run", "--at", "02:00", "--address", "local"])
    assert out.exit_code == EXIT_CONFIG and "--at/--address apply to studies only" in out.output
