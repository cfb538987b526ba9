"""The `scenario` field and the `serving:` section: validation (exit 2 naming file and field) and sweeps."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from llem_ray.cli import app
from llem_ray.config.experiment import ExperimentConfig, measurement_config_hash
from llem_ray.config.serving import ServingConfig
from llem_ray.config.sweep import expand_study

SERVING = {"request_rate_req_s": 4, "duration_s": 40}


def _dry_run(tmp_path, name: str, document: dict) -> tuple[int, str]:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document))
    result = CliRunner().invoke(app, ["run", str(path), "--dry-run"])
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (
            {"backend": "pytorch", "scenario": "serving", "serving": SERVING},
            "scenario: 'serving' is not supported by backend 'pytorch' yet (backends that run it: vllm)",
        ),
        (
            {"backend": "tensorrt", "scenario": "serving", "serving": SERVING},
            "scenario: 'serving' is not supported by backend 'tensorrt' yet",
        ),
        ({"backend": "vllm", "serving": SERVING}, "section 'serving' is set but scenario is 'offline'"),
        ({"backend": "vllm", "scenario": "serving"}, "scenario 'serving' needs a 'serving' section"),
        (
            {"backend": "vllm", "scenario": "serving", "serving": {"duration_s": 40}},
            "serving: set exactly one of request_rate_req_s (open-loop rate) and concurrency",
        ),
        (
            {"backend": "vllm", "scenario": "serving", "serving": {**SERVING, "concurrency": 8}},
            "serving: set exactly one of request_rate_req_s",
        ),
        (
            {"backend": "vllm", "scenario": "serving", "serving": {"concurrency": 8, "burstiness": 0.5}},
            "serving: burstiness shapes the arrivals of request_rate_req_s",
        ),
        (
            {"backend": "vllm", "scenario": "serving", "serving": {"request_rate_req_s": 0.1, "duration_s": 30}},
            "gives 3 requests, not more than warmup_requests (10)",
        ),
        (
            {"backend": "vllm", "scenario": "serving", "serving": {**SERVING, "slo": {"ttft_ms": -5}}},
            "serving.slo.ttft_ms: Input should be greater than 0",
        ),
        ({"backend": "vllm", "scenario": "serving", "n": 50, "serving": SERVING}, "n applies to the offline scenario"),
        (
            {"backend": "vllm", "scenario": "serving", "prefill_split": True, "serving": SERVING},
            "prefill_split: the serving scenario has no prefill-only loop",
        ),
        (
            {
                "backend": "vllm",
                "scenario": "serving",
                "dataset": {"source": "synthetic", "input_len_tokens": 4096},
                "max_input_tokens": 4096,
                "serving": {"request_rate_req_s": 1000, "duration_s": 30},
            },
            "= 122,880,000 synthetic prompt tokens (encoded before the run); the limit is 100,000,000",
        ),
    ],
)
def test_invalid_serving_configs_exit_2_naming_file_and_field(tmp_path, document, expected):
    code, output = _dry_run(tmp_path, "serving.yaml", {"model": "llem/tiny-llama", **document})
    assert code == 2, output
    assert "serving.yaml" in output and expected in output
    assert "Traceback" not in output


def test_a_valid_serving_config_passes_the_dry_run(tmp_path):
    code, output = _dry_run(
        tmp_path,
        "ok.yaml",
        {
            "model": "llem/tiny-llama",
            "backend": "vllm",
            "scenario": "serving",
            "prefill_split": False,
            "serving": {**SERVING, "slo": {"ttft_ms": 500, "tpot_ms": 50}},
        },
    )
    assert code == 0, output
    assert "tiny-llama_vllm_bf16_4rps" in output
    assert "serving: 4 req/s (Poisson) for 40 s, SLO TTFT <= 500 ms, TPOT <= 50 ms" in output


def test_offline_stays_the_default_and_its_hash_is_unchanged_by_the_new_fields():
    config = ExperimentConfig(backend="vllm")
    assert config.scenario == "offline" and config.serving is None
    assert config.display_name() == "tiny-llama_vllm_bf16_bs100"
    # the hashes these configs had before the serving scenario existed: old studies still resume
    assert measurement_config_hash(ExperimentConfig()) == "5cac9381fb6e786c"
    assert measurement_config_hash(ExperimentConfig(backend="vllm", vllm={"max_num_seqs": 32})) == "a3a2db5c399dfb14"
    concurrency = ServingConfig(concurrency=8, duration_s=30, slo={"tpot_ms": 40})
    assert concurrency.describe() == "fixed concurrency 8 for 30 s, SLO TPOT <= 40 ms"
    assert ServingConfig(request_rate_req_s=2, burstiness=0.5).describe() == (
        "2 req/s (gamma shape 0.5) for 60 s, SLO none"
    )
    with pytest.raises(ValidationError, match="exactly one"):
        ExperimentConfig(backend="vllm", scenario="serving", serving={"duration_s": 40})


def test_request_rate_and_slo_sweep_as_dotted_keys():
    study = expand_study(
        {
            "model": "llem/tiny-llama",
            "backend": "vllm",
            "scenario": "serving",
            "serving": {"duration_s": 60, "slo": {"tpot_ms": 50}},
            "sweep": {"serving.request_rate_req_s": [2, 8, 32], "serving.slo.ttft_ms": [200, 500]},
            "experiments": [{"serving": {"request_rate_req_s": None, "concurrency": 64}}],
        }
    )
    rates = [(e.serving.request_rate_req_s, e.serving.concurrency, e.serving.slo.ttft_ms) for e in study.experiments]
    assert rates == [
        (2, None, 200),
        (2, None, 500),
        (8, None, 200),
        (8, None, 500),
        (32, None, 200),
        (32, None, 500),
        (None, 64, None),
    ]
    assert all(e.serving.slo.tpot_ms == 50 and e.serving.duration_s == 60 for e in study.experiments)
    assert len({measurement_config_hash(e) for e in study.experiments}) == 7
    assert [e.display_name() for e in study.experiments][::2] == [
        "tiny-llama_vllm_bf16_2rps",
        "tiny-llama_vllm_bf16_8rps",
        "tiny-llama_vllm_bf16_32rps",
        "tiny-llama_vllm_bf16_c64",
    ]


def test_grid_points_of_a_backend_that_cannot_serve_are_skipped_with_the_reason():
    study = expand_study(
        {
            "model": "llem/tiny-llama",
            "scenario": "serving",
            "serving": SERVING,
            "sweep": {"backend": ["pytorch", "vllm"]},
        }
    )
    assert [e.backend for e in study.experiments] == ["vllm"]
    (skipped,) = study.skipped
    assert skipped.params == {"backend": "pytorch"} and "not supported by backend 'pytorch'" in skipped.reason


def test_the_two_gpu_studies_differ_only_in_their_load_so_they_draw_one_curve():
    from pathlib import Path

    from llem_ray.config.loader import load_study_config

    configs = Path(__file__).resolve().parents[2] / "configs"
    rates = load_study_config(configs / "study-serving-slo.yaml").experiments
    saturation, offline = load_study_config(configs / "study-serving-saturation.yaml").experiments

    def without_load(config: ExperimentConfig) -> dict:
        data = config.model_dump(mode="json")
        data["serving"].pop("request_rate_req_s")
        data["serving"].pop("concurrency")
        return data

    assert [c.serving.request_rate_req_s for c in rates] == [2, 8, 32] and saturation.serving.concurrency == 512
    assert all(without_load(c) == without_load(saturation) for c in rates)
    assert offline.scenario == "offline" and offline.n == 3072
    assert offline.vllm == saturation.vllm and offline.max_output_tokens == saturation.max_output_tokens == 256
