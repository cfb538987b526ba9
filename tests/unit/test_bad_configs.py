"""Every malformed config exits 2 with one readable message naming the file and the field (issue 2)."""

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llem_ray.cli import app

CORPUS = Path(__file__).parent / "bad_configs"

# file -> text the message must contain (besides the file name)
EXPECTED = {
    "serving_old_rate_name.yaml": "serving.request_rate: renamed to serving.request_rate_req_s",
    "wrong_type.yaml": "n: Input should be a valid integer",
    "unknown_key.yaml": "batchsize: unknown field",
    "unknown_backend.yaml": "backend: unknown backend 'onnx' (registered: pytorch, vllm, tensorrt)",
    "precision_unsupported.yaml": "precision 'fp32' is not supported by backend 'tensorrt'",
    "section_mismatch.yaml": "section 'vllm' is set but backend is 'pytorch'",
    "empty_sweep_list.yaml": "sweep.precision: must be a non-empty list",
    "sweep_unknown_dotted.yaml": "unknown field 'batchsize'",
    "sweep_unknown_nested.yaml": "unknown field 'nope'",
    "yaml_syntax.yaml": "yaml_syntax.yaml:3:",
    "not_a_mapping.yaml": "must be a mapping of fields, got list",
    "scalar_document.yaml": "must be a mapping of fields, got str",
    "python_tag.yaml": "YAML error",
    "study_bad_execution.yaml": "execution.n_cycles: Input should be greater than or equal to 1",
    "study_bad_explicit.yaml": "experiments[0].precision",
    "study_all_skipped.yaml": "no valid experiment (1 skipped",
    "decoding_unsupported.yaml": "decoding mode 'beam_search' is not supported by backend 'vllm'",
    "empty.yaml": "the file is empty",
    "study_old_gap_name.yaml": "execution.config_gap_s: renamed to execution.config_gap_seconds",
    "seed_v1_name.yaml": "model_name: renamed to model",
}


def test_corpus_is_complete():
    assert sorted(p.name for p in CORPUS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_config_exits_2_with_file_and_field(name):
    result = CliRunner().invoke(app, ["run", str(CORPUS / name), "--dry-run"])
    assert result.exit_code == 2, result.output
    assert name in result.output
    assert EXPECTED[name] in result.output
    assert "Traceback" not in result.output


def test_huge_file_is_refused(tmp_path):
    big = tmp_path / "huge.yaml"
    big.write_text(
        "model: llem/tiny-llama\npassthrough_kwargs:\n" + "".join(f"  k{i}: {'x' * 20}\n" for i in range(60000))
    )
    result = CliRunner().invoke(app, ["run", str(big), "--dry-run"])
    assert result.exit_code == 2
    assert "the limit is 1,000,000" in result.output


def test_python_tag_never_executes(tmp_path):
    marker = tmp_path / "pwned"
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(f'model: !!python/object/apply:os.system ["touch {marker}"]\n')
    result = CliRunner().invoke(app, ["run", str(cfg), "--dry-run"])
    assert result.exit_code == 2
    assert not marker.exists()


def test_missing_file_exits_2(tmp_path):
    result = CliRunner().invoke(app, ["run", str(tmp_path / "nope.yaml"), "--dry-run"])
    assert result.exit_code == 2
    assert "config file not found" in result.output


def test_real_process_exit_code_and_stderr():
    proc = subprocess.run(
        [sys.executable, "-m", "llem_ray", "run", str(CORPUS / "unknown_key.yaml"), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "unknown_key.yaml: batchsize: unknown field" in proc.stderr
