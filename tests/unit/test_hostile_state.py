"""Issue 18 without Ray: the bounded loader's edges, causes that survive pickling, the entry points'
exit codes (SIGTERM included), file-system pre-flight, atomic writes, the study lock and part repair."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from llem_ray.cluster.driver import StudyOptions, run
from llem_ray.config import safe_yaml
from llem_ray.config.experiment import ExperimentConfig
from llem_ray.config.limits import MAX_YAML_DEPTH, MAX_YAML_NODES
from llem_ray.config.loader import read_yaml
from llem_ray.config.study import StudyConfig
from llem_ray.entry import run_guarded, terminal_safe
from llem_ray.errors import (
    EXIT_CONFIG,
    EXIT_ERROR,
    EXIT_TERMINATED,
    BackendError,
    ConfigError,
    ExperimentError,
    PreFlightError,
    StudyError,
    add_note,
)
from llem_ray.measure.experiment import run_and_save
from llem_ray.measure.inputs import output_dir_problem, study_problems
from llem_ray.results.atomic import write_atomic
from llem_ray.results.manifest import ManifestEntry
from llem_ray.results.persistence import save_experiment
from llem_ray.results.repair import repair_parts
from llem_ray.results.study_dir import StudyLock, load_for_resume
from llem_ray.results.table import part_path, read_part, result_row, write_part
from tests.result_factory import make_result, make_timeseries

REPO = Path(__file__).resolve().parents[2]


# ---- the loader ---------------------------------------------------------------------------------------
def test_aliases_and_merge_keys_within_the_limits_still_work():
    data = safe_yaml.parse("base: &b {n: 2, dataset: synthetic}\nexp:\n  <<: *b\n  n: 3\ncopy: *b\n")
    assert data["exp"] == {"n": 3, "dataset": "synthetic"} and data["copy"] == {"n": 2, "dataset": "synthetic"}


def test_depth_limit_is_exact():
    inner = MAX_YAML_DEPTH - 1  # the document's own mapping is the first level
    assert safe_yaml.parse("x: " + "[" * inner + "]" * inner)["x"] is not None
    with pytest.raises(safe_yaml.RefusedYAML, match=f"nested more than {MAX_YAML_DEPTH} levels"):
        safe_yaml.parse("x: " + "[" * (inner + 1) + "]" * (inner + 1))


def test_value_count_is_bounded_without_aliases_too(tmp_path):
    path = tmp_path / "wide.yaml"
    path.write_text("model: llem/tiny-llama\npassthrough_kwargs:\n  x: [" + "0," * MAX_YAML_NODES + "0]\n")
    start_s = time.perf_counter()
    with pytest.raises(ConfigError, match=r"wide.yaml:3:\d+: passthrough_kwargs.x\[\d+\]: the document holds more"):
        read_yaml(path)
    assert time.perf_counter() - start_s < 30, "bounded, but slow: the limit should stop it early"


def test_config_path_that_is_a_directory_or_a_device(tmp_path):
    with pytest.raises(ConfigError, match="is a directory, not a config file"):
        read_yaml(tmp_path)
    with pytest.raises(ConfigError, match="config file not found"):
        read_yaml("/dev/zero")


# ---- causes through pickling (what Ray does) ---------------------------------------------------------------
@pytest.mark.parametrize(
    "error",
    [
        PreFlightError(["dataset: /x is a directory", "model 'm': no such directory"]),
        ConfigError("f.yaml: n: bad"),
        BackendError("engine died"),
        ExperimentError("timeout"),
        StudyError("breaker"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_pickle_with_all_their_fields(error):
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error) and str(again) == str(error) and again.__dict__ == error.__dict__
    if isinstance(error, PreFlightError):
        assert again.failures == ["dataset: /x is a directory", "model 'm': no such directory"]
        assert "\n" not in str(again) and not again.retryable


def test_retryable_says_what_no_retry_can_fix():
    assert not PreFlightError(["x"]).retryable and not ConfigError("x").retryable
    assert BackendError("x").retryable and ExperimentError("x").retryable


# ---- the entry points ---------------------------------------------------------------------------------------
def test_one_line_per_failure_with_the_documented_code(capsys):
    assert run_guarded(lambda: (_ for _ in ()).throw(PreFlightError(["a", "b"])), prefix="llem:") == EXIT_ERROR
    assert capsys.readouterr().err.splitlines() == ["llem: pre-flight: a", "llem: pre-flight: b"]

    def deep(n: int) -> int:
        return deep(n + 1)

    assert run_guarded(lambda: deep(0), prefix="error:") == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("error: RecursionError:") and err.count("\n") == 1 and "Traceback" not in err

    def disk_full() -> None:
        raise OSError(28, "No space left on device", "/data/results")

    assert run_guarded(disk_full, prefix="error:") == EXIT_ERROR
    assert capsys.readouterr().err == "error: OSError: [Errno 28] No space left on device: '/data/results'\n"
    assert run_guarded(lambda: ExperimentConfig(n=0), prefix="llem:") == EXIT_CONFIG
    assert "n: Input should be greater than or equal to 1" in capsys.readouterr().err


def test_notes_on_the_cause_follow_it(capsys):
    def stopped_then_more() -> None:
        exc = StudyError("circuit breaker: 5 consecutive failed attempts")
        add_note(exc, "also, while finishing the stopped study: OSError: disk full")
        raise exc

    assert run_guarded(stopped_then_more, prefix="llem:") == EXIT_ERROR
    assert capsys.readouterr().err.splitlines() == [
        "llem: circuit breaker: 5 consecutive failed attempts",
        "llem: also, while finishing the stopped study: OSError: disk full",
    ]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--cycles", "99999999999"], "--cycles: must be between 1 and 1,000, got 99,999,999,999"),
        (["--output", "/proc/llem"], "--output '/proc/llem': must not lie under /proc (a kernel file system)"),
    ],
)
def test_hostile_flags_exit_2_at_once_through_both_entry_points(tmp_path, capsys, flags, expected):
    import tracemalloc

    from typer.testing import CliRunner

    from llem_ray import study
    from llem_ray.cli import app

    config = tmp_path / "study.yaml"
    config.write_text("model: llem/tiny-llama\ndataset: synthetic\nsweep:\n  random_seed: [1, 2]\n")
    tracemalloc.start()
    start_s = time.perf_counter()
    code = study.main([str(config), "--dry-run", *flags])
    elapsed_s, (_, peak_bytes) = time.perf_counter() - start_s, tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert code == EXIT_CONFIG and capsys.readouterr().err == f"llem: {expected}\n"
    assert elapsed_s < 1.0 and peak_bytes < 50 * 2**20, (elapsed_s, peak_bytes)
    result = CliRunner().invoke(app, ["run", str(config), "--dry-run", *flags])
    assert result.exit_code == EXIT_CONFIG and result.output == f"error: {expected}\n"
    assert list(tmp_path.iterdir()) == [config]


def test_control_characters_never_reach_the_terminal(capsys):
    assert terminal_safe("a\x1b[31mb\x00c\u202ed\nnext") == "a\\x1b[31mb\\x00c\\u202ed next"
    run_guarded(lambda: (_ for _ in ()).throw(StudyError("held by \x1b]0;x\x07")), prefix="llem:")
    assert capsys.readouterr().err == "llem: held by \\x1b]0;x\\x07\n"


def test_sigterm_ends_the_action_with_143_after_its_clean_up(capsys):
    cleaned, before = [], signal.getsignal(signal.SIGTERM)

    def action() -> None:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)
        finally:
            cleaned.append(True)

    assert run_guarded(action, prefix="llem:", resume_hint="continue with --resume DIR") == EXIT_TERMINATED == 143
    assert cleaned == [True]
    assert capsys.readouterr().err == "llem: terminated (SIGTERM); continue with --resume DIR\n"
    assert signal.getsignal(signal.SIGTERM) is before


def test_sigterm_that_ray_turned_into_keyboard_interrupt_still_exits_143(capsys):
    def action() -> None:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)
        except KeyboardInterrupt:  # what ray.get raises when a signal handler raised inside it
            raise KeyboardInterrupt from None

    assert run_guarded(action, prefix="llem:") == EXIT_TERMINATED
    assert capsys.readouterr().err == "llem: terminated (SIGTERM)\n"


def test_sigterm_of_a_real_llem_process_exits_143(fakes_env, tmp_path):
    config = tmp_path / "slow.yaml"
    config.write_text(
        "backend: fake\nmodel: llem/tiny-llama\ndataset: synthetic\nn: 1\nmax_output_tokens: 2\n"
        "prefill_split: false\nwarmup: {n_warmup: 0, thermal_floor_s: 30}\nbaseline: {enabled: false}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "llem_ray", "run", str(config)],
        env=fakes_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    time.sleep(4)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_TERMINATED, err[-2000:]
    assert err.splitlines()[-1] == "error: terminated (SIGTERM)"


@pytest.fixture
def fakes_env():
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "LLEM_PLUGINS": "tests.fakes", "PYTHONPATH": path}


# ---- pre-flight from the file system -------------------------------------------------------------------------
def _bad_inputs(tmp_path: Path) -> list[ExperimentConfig]:
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "ok"}\n{"text": \n')
    no_text = tmp_path / "no_text.jsonl"
    no_text.write_text('{"q": "x"}\n')
    (tmp_path / "empty_model").mkdir()
    return [
        ExperimentConfig(dataset=str(tmp_path / "missing.jsonl")),
        ExperimentConfig(dataset=str(tmp_path)),
        ExperimentConfig(dataset=str(broken)),
        ExperimentConfig(dataset=str(no_text)),
        ExperimentConfig(dataset="synthetic", model=str(tmp_path / "empty_model")),
        ExperimentConfig(dataset="synthetic", model=str(broken)),
        ExperimentConfig(dataset="synthetic", model="./no/such/model"),
    ]


def test_study_pre_flight_reports_every_input_problem_at_once(tmp_path):
    (tmp_path / "a_file").write_text("")
    problems = study_problems(_bad_inputs(tmp_path), tmp_path / "a_file" / "out")
    text = "\n".join(problems)
    assert len(problems) == 8, text
    for expected in (
        "missing.jsonl' is neither",
        "is a directory or device, not a file",
        "broken.jsonl:2: not valid JSON",
        "no row among the first 100 records has a text field",
        "holds no config.json",
        "broken.jsonl' is not a directory",
        "'./no/such/model': no such directory",
        "a_file is not a directory",
    ):
        assert expected in text, (expected, text)


def test_study_pre_flight_runs_before_ray_starts(tmp_path):
    import ray

    study = StudyConfig(experiments=_bad_inputs(tmp_path)[:2], output_dir=str(tmp_path / "out"))
    with pytest.raises(PreFlightError) as info:
        run(study, StudyOptions(quiet=True))
    assert len(info.value.failures) == 2 and not ray.is_initialized()
    assert not (tmp_path / "out").exists(), "a study directory was created for a study that cannot run"


def test_output_dir_behind_a_symlink_into_proc(tmp_path):
    (tmp_path / "link").symlink_to("/proc/self")
    assert "lies under /proc" in output_dir_problem(tmp_path / "link" / "results")
    assert output_dir_problem(tmp_path / "new" / "deeper") is None


def test_single_experiment_refuses_an_unwritable_output_before_measuring(fakes, tmp_path):
    (tmp_path / "file").write_text("")
    config = ExperimentConfig(
        backend="fake",
        model="llem/tiny-llama",
        dataset="synthetic",
        n=1,
        output_dir=str(tmp_path / "file" / "x"),
        warmup={"n_warmup": 0, "thermal_floor_s": 30},
    )
    start_s = time.monotonic()
    with pytest.raises(PreFlightError, match="is not a directory"):
        run_and_save(config)
    assert time.monotonic() - start_s < 10, "it measured (a 30 s thermal floor) before refusing"


# ---- atomic writes, the lock, repair ------------------------------------------------------------------------
def test_a_failed_write_leaves_no_temp_file(tmp_path):
    (tmp_path / "target").mkdir()  # os.replace onto a directory fails after the temp file is written

    with pytest.raises(OSError):
        write_atomic(tmp_path / "target", lambda tmp: tmp.write_bytes(b"x" * 1000))

    def half_then_fail(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomic(tmp_path / "manifest.json", half_then_fail)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["target"]


LOCK_HOLDER = """
import sys, time
from pathlib import Path
from llem_ray.results.study_dir import StudyLock
with StudyLock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def test_study_lock_refuses_a_second_driver_and_names_the_holder(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(StudyError, match=rf"in use by another driver \(pid {holder.pid} on .* since .*: -c"):
            StudyLock(tmp_path).acquire()
    finally:
        holder.kill()  # SIGKILL: the kernel drops the lock with the process
        holder.wait()
    with StudyLock(tmp_path):
        pass
    with pytest.raises(StudyError, match="does not exist"):
        StudyLock(tmp_path / "nope").acquire()


def test_resume_of_a_directory_without_manifest(tmp_path):
    assert load_for_resume(tmp_path, "h") is None
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(StudyError, match="not a study directory .*notes.txt"):
        load_for_resume(tmp_path, "h")


def test_bad_or_missing_parts_are_rebuilt_from_result_json(tmp_path):
    table_dir = tmp_path / "table"
    entries, rows = [], {}
    for cycle in (1, 2, 3):
        result = make_result(cycle=cycle)
        key = f"cfg0-c{cycle}"
        result_dir = save_experiment(result, make_timeseries(), tmp_path / "experiments" / key)
        relative = str(result_dir.relative_to(tmp_path))
        rows[key] = result_row(result, key=key, order_index=cycle - 1, result_path=relative)
        write_part(table_dir, rows[key])
        entries.append(
            ManifestEntry(
                key=key,
                order_index=cycle - 1,
                name="n",
                measurement_config_hash="cfg0",
                cycle=cycle,
                backend="pytorch",
                status="completed",
                result_path=relative,
            )
        )
    original = read_part(table_dir, "cfg0-c1")
    part_path(table_dir, "cfg0-c1").write_bytes(part_path(table_dir, "cfg0-c1").read_bytes()[:100])  # truncated
    part_path(table_dir, "cfg0-c2").unlink()
    (tmp_path / entries[2].result_path / "result.json").unlink()  # c3's part is intact: nothing to do

    keys, entry_of = [e.key for e in entries], {e.key: e for e in entries}.__getitem__
    repair = repair_parts(tmp_path, table_dir, keys, entry_of)
    assert repair.rebuilt == ["cfg0-c1", "cfg0-c2"] and repair.lost == {}
    assert read_part(table_dir, "cfg0-c1").equals(original)

    part_path(table_dir, "cfg0-c3").unlink()
    repair = repair_parts(tmp_path, table_dir, keys, entry_of)
    assert repair.rebuilt == [] and list(repair.lost) == ["cfg0-c3"]
    assert pq.read_table(part_path(table_dir, "cfg0-c2")).num_rows == 1
