"""The hostile-input corpus (issue 18): every file, through both entry points' dry run, exits 2 with one
line that names the file and the field (or the line, for a syntax error), no traceback, nothing
written, within TIME_LIMIT_S and MEMORY_LIMIT_BYTES and in under a second of CPU time.

One runner process (tests/unit/hostile_runner.py) imports llem_ray once and forks a limited child
per file, so the ~100 files take seconds, not one interpreter start each.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.hostile_runner import TIME_LIMIT_S
from tests.unit.test_bad_configs import EXPECTED as BAD_CONFIG_EXPECTED

HERE = Path(__file__).parent
HOSTILE = HERE / "hostile_configs"
MAX_WORK_S = 1.0
"""Most CPU time an entry point may spend to refuse one file, imports done (the drill asked for < 1 s;
CPU time, so that other work on a shared CI machine cannot fail the test; alone, wall time is the same)."""
MAX_PEAK_RSS_MIB = 200
"""Largest resident memory of a child that refused one file, MiB (the drill asked for < 200 MB)."""

# file -> what its one line must say besides the file name: the field, or line:column for syntax
HOSTILE_EXPECTED = {
    "alias_bomb_passthrough.yaml": "passthrough_kwargs.f[0]: the document holds more than 100,000 values",
    "alias_bomb_top.yaml": "l5[7]: the document holds more than 100,000 values",
    "alias_bomb_sweep.yaml": "sweep.random_seed[0]: the document holds more than 100,000 values",
    "alias_bomb_merge.yaml": "m6.m6x[0]: the document holds more than 100,000 values",
    "alias_recursive.yaml": "passthrough_kwargs.self: alias *loop refers to a value that contains it",
    "alias_deep.yaml": "passthrough_kwargs.b[0]",
    "alias_undefined.yaml": "alias_undefined.yaml:2:8: YAML error: found undefined alias 'nowhere'",
    "deep_flow_5000.yaml": "passthrough_kwargs.deep[0]",
    "deep_block_mappings.yaml": "passthrough_kwargs.k0.k1",
    "deep_flow_mappings.yaml": "a.a.a.a",
    "dup_top_key.yaml": "n: duplicate key 'n' (first on line 3, again on line 5)",
    "dup_nested_key.yaml": "decoder.temperature: duplicate key 'temperature' (first on line 4, again on line 5)",
    "dup_sweep_key.yaml": "sweep.precision: duplicate key 'precision' (first on line 3, again on line 5)",
    "dup_experiment_key.yaml": "experiments[0].n: duplicate key 'n' (first on line 3, again on line 5)",
    "dup_execution_key.yaml": "execution.n_cycles: duplicate key 'n_cycles' (first on line 5, again on line 7)",
    "dup_quoted_key.yaml": "model: duplicate key 'model' (first on line 2, again on line 3)",
    "inf_timeout.yaml": "execution.timeout_s: must be a finite number, got '.inf'",
    "inf_baseline.yaml": "baseline.duration_s: must be a finite number, got '.inf'",
    "nan_sample_hz.yaml": "energy.sample_hz: must be a finite number, got '.nan'",
    "neg_inf_thermal_floor.yaml": "warmup.thermal_floor_s: must be a finite number, got '-.inf'",
    "overflow_temperature.yaml": "decoder.temperature: must be a finite number, got '1.0e+400'",
    "nan_passthrough.yaml": "passthrough_kwargs.scale: must be a finite number",
    "inf_sweep_value.yaml": "sweep.decoder.top_p[1]: must be a finite number",
    "inf_config_gap.yaml": "execution.config_gap_seconds: must be a finite number",
    "nan_vllm_fraction.yaml": "vllm.gpu_memory_utilization: must be a finite number",
    "inf_as_string.yaml": "baseline.cache_ttl_s: Input should be a valid number (got 'inf')",
    "n_1e20.yaml": "n: integer out of range (more than 64 bits)",
    "n_above_limit.yaml": "n: Input should be less than or equal to 100000",
    "seed_1e42.yaml": "random_seed: integer out of range (more than 64 bits)",
    "seed_above_limit.yaml": "random_seed: Input should be less than or equal to 4294967295",
    "seed_negative.yaml": "random_seed: Input should be greater than or equal to 0",
    "cycles_huge.yaml": "execution.n_cycles: Input should be less than or equal to 1000",
    "runs_above_limit.yaml": "execution.n_cycles: 200 experiment(s) x 1,000 cycle(s) = 200,000 runs; the limit",
    "grid_above_limit.yaml": "sweep: 1,000,000 experiments; the limit is 100,000",
    "gpus_above_limit.yaml": "resources.gpus: Input should be less than or equal to 64",
    "tokens_above_limit.yaml": "max_output_tokens: Input should be less than or equal to 1048576",
    "workload_above_limit.yaml": "n x dataset.input_len_tokens = 10,000,000,000 synthetic prompt tokens",
    "timeout_above_limit.yaml": "execution.timeout_s: Input should be less than or equal to 604800",
    "retries_above_limit.yaml": "execution.max_retries: Input should be less than or equal to 100",
    "sample_hz_above_limit.yaml": "energy.sample_hz: Input should be less than or equal to 100",
    "warmup_above_limit.yaml": "warmup.n_warmup: Input should be less than or equal to 10000",
    "kv_bytes_above_limit.yaml": "vllm.kv_cache_memory_bytes: Input should be less than or equal to 1125899906842624",
    "int_5000_digits.yaml": "n: cannot read",
    "int_hex_huge.yaml": "max_output_tokens: integer out of range",
    "bool_n.yaml": "n: Input should be a valid integer (got True)",
    "bool_seed.yaml": "random_seed: Input should be a valid integer (got False)",
    "bool_cycles.yaml": "execution.n_cycles: Input should be a valid integer (got True)",
    "bool_beams_yes.yaml": "decoder.num_beams: Input should be a valid integer (got True)",
    "bool_temperature.yaml": "decoder.temperature: Input should be a valid number (got True)",
    "bool_batch_on.yaml": "pytorch.batch_size: Input should be a valid integer (got True)",
    "string_number.yaml": "n: Input should be a valid integer (got '100')",
    "webhook_file_scheme.yaml": "execution.webhook_url: must be an http:// or https:// URL with a host",
    "webhook_no_host.yaml": "execution.webhook_url: must be an http:// or https:// URL with a host",
    "webhook_ftp.yaml": "execution.webhook_url: must be an http:// or https:// URL with a host",
    "output_dir_proc.yaml": "output_dir: must not lie under /proc",
    "output_dir_sys_experiment.yaml": "output_dir: must not lie under /sys",
    "output_dir_dev_dotdot.yaml": "output_dir: must not lie under /dev",
    "output_dir_empty.yaml": "output_dir: must not be empty",
    "name_nul.yaml": "name: must not contain control characters (found \\x00)",
    "name_ansi.yaml": "name: must not contain control characters (found \\x1b)",
    "study_name_osc.yaml": "name: must not contain control characters (found \\x07, \\x1b)",
    "model_bidi.yaml": "model: must not contain control characters (found \\u202e)",
    "dataset_ansi.yaml": "dataset.source: must not contain control characters (found \\x1b)",
    "raw_nul_byte.yaml": "raw_nul_byte.yaml:2: name: YAML error: character '\\x00' is not allowed",
    "raw_escape_byte.yaml": "raw_escape_byte.yaml:2: name: YAML error: character '\\x1b' is not allowed",
    "tab_indent.yaml": "tab_indent.yaml:3:1: YAML error: found character '\\t' that cannot start any token",
    "two_documents.yaml": "two_documents.yaml:2:1: YAML error: but found another document",
    "unhashable_key.yaml": "unhashable_key.yaml:2:3: YAML error: found unhashable key",
    "bad_timestamp.yaml": "execution.schedule[0]: cannot read '2026-13-45 10:00:00'",
    "binary_tag.yaml": "binary_tag.yaml:1:8: YAML error: failed to decode base64",
    "unknown_tag.yaml": "unknown_tag.yaml:1:8: YAML error: could not determine a constructor for the tag '!shell'",
    "null_key.yaml": "None: Keys should be strings",
    "int_key.yaml": "1: Keys should be strings",
    "bool_sweep_key.yaml": "sweep key 'True': unknown field 'True'",
    "experiments_mapping.yaml": "experiments: must be a list of experiment mappings",
    "dataset_list.yaml": "dataset: Input should be a valid dictionary",
    "utf16.yaml": "utf16.yaml: not UTF-8 text",
}
CORPUS = {
    **{HOSTILE / n: t for n, t in HOSTILE_EXPECTED.items()},
    **{HERE / "bad_configs" / n: t for n, t in BAD_CONFIG_EXPECTED.items()},
}
ENTRY_POINTS = ("llem", "study")  # `llem run FILE --dry-run`, `python -m llem_ray.study FILE --dry-run`


def test_corpus_lists_every_file():
    assert sorted(p.name for p in HOSTILE.glob("*.yaml")) == sorted(HOSTILE_EXPECTED)
    assert len(HOSTILE_EXPECTED) >= 50


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, dict]:
    scratch = tmp_path_factory.mktemp("hostile")
    proc = subprocess.run(
        [sys.executable, "-m", "tests.unit.hostile_runner", str(scratch), *map(str, CORPUS)],
        capture_output=True,
        text=True,
        timeout=len(CORPUS) * (TIME_LIMIT_S + 10),
        cwd=HERE.parents[1],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = {}
    for report in map(json.loads, proc.stdout.splitlines()):
        path = Path(report["file"])
        found[f"{path.name}:{path.parent.name}"] = report
    assert len(found) == len(CORPUS)
    return found


@pytest.mark.parametrize("path", sorted(CORPUS), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_hostile_file_exits_2_with_one_line_naming_file_and_field(reports, path):
    report = reports[f"{path.name}:{path.parent.name}"]
    assert not report["timed_out"] and report["child_status"] == 0, f"over {TIME_LIMIT_S} s or killed: {report}"
    assert report["written"] == [], f"files written: {report['written']}"
    assert report["peak_rss_mib"] < MAX_PEAK_RSS_MIB
    for entry in ENTRY_POINTS:
        run = report[entry]
        lines = run["stderr"].splitlines()
        assert run["code"] == 2, f"{entry}: exit {run['code']}: {run['stderr'][-2000:]}"
        assert len(lines) == 1, f"{entry}: {len(lines)} lines: {run['stderr'][-2000:]}"
        assert path.name in lines[0] and CORPUS[path] in lines[0], f"{entry}: {lines[0]}"
        assert "Traceback" not in run["stdout"] + run["stderr"] and run["stdout"] == ""
        assert run["cpu_seconds"] < MAX_WORK_S, f"{entry}: {run['cpu_seconds']:.2f} s of CPU"


LIMIT_PROBE = """
import json, sys, time
from tests.unit.hostile_runner import run_file
entries = {"hog": lambda path: len(bytearray(400 * 2**20)), "hang": lambda path: time.sleep(60)}
print(json.dumps(run_file("x.yaml", sys.argv[1], {"hog": entries["hog"]})))
print(json.dumps(run_file("x.yaml", sys.argv[1], {"hang": entries["hang"]}, time_limit_s=1)))
"""


def test_the_limits_the_corpus_runs_under_bite(tmp_path):
    """A child that allocates 400 MiB gets MemoryError; one that hangs is killed by its alarm."""
    proc = subprocess.run(
        [sys.executable, "-c", LIMIT_PROBE, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=HERE.parents[1],
    )
    hog, hang = map(json.loads, proc.stdout.splitlines())
    assert hog["hog"]["code"].startswith("raised MemoryError")
    assert "hang" not in hang and hang["child_status"] != 0
