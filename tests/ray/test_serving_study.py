"""A serving study through Ray on 127.0.0.1: each run in a fresh experiment actor, results in the study table.

The workers serve the stand-in `vllm` package's fixed-pace async engine (tests/unit/fake_engines,
put on their PYTHONPATH by the job's runtime_env) through the real VLLMStreamingEngine, and meter
the fake constant-power meter (`LLEM_PLUGINS=tests.fakes`).
"""

from __future__ import annotations

import os

import pyarrow.parquet as pq
import pytest
import ray

from llem_ray.cluster.driver import StudyOptions, run
from llem_ray.config.experiment import ExperimentConfig
from llem_ray.results.report import write_report
from tests.ray.helpers import REPO_ROOT, fake_study

pytestmark = pytest.mark.ray

FAKE_ENGINES = REPO_ROOT / "tests" / "unit" / "fake_engines"


@pytest.fixture(scope="module")
def ray_with_stand_in_vllm():
    """One local Ray node (2 logical GPUs) whose workers import the stand-in vllm and the test doubles."""
    path = os.pathsep.join(p for p in (str(FAKE_ENGINES), os.environ.get("PYTHONPATH", "")) if p)
    env = {"env_vars": {"LLEM_PLUGINS": "tests.fakes", "PYTHONPATH": path}}
    ray.init(address="local", num_cpus=4, num_gpus=2, include_dashboard=False, runtime_env=env, log_to_driver=False)
    yield
    ray.shutdown()


def _serving(load: dict) -> ExperimentConfig:
    return ExperimentConfig(
        backend="vllm",
        model="llem/tiny-llama",
        dataset="synthetic",
        max_input_tokens=16,
        max_output_tokens=4,
        scenario="serving",
        vllm={"max_num_seqs": 8},
        warmup={"n_warmup": 1, "thermal_floor_s": 0},
        baseline={"enabled": False},
        serving={"duration_s": 1.0, "warmup_requests": 3, "slo": {"ttft_ms": 1000, "tpot_ms": 200}, **load},
    )


def test_a_serving_study_runs_every_cycle_in_its_own_actor_and_reports_load_curves(ray_with_stand_in_vllm, tmp_path):
    experiments = [_serving({"request_rate_req_s": 30}), _serving({"concurrency": 4})]
    result = run(fake_study(experiments, tmp_path, n_cycles=2), StudyOptions(quiet=True))
    assert result.summary.completed == 4 and result.summary.failed == 0

    rows = pq.read_table(os.path.join(result.output_dir, "results.parquet")).to_pylist()
    assert {r["scenario"] for r in rows} == {"serving"} and len({r["placement.node_id"] for r in rows}) == 1
    for row in rows:
        target = row["serving.target_rate_req_s"]
        if target is not None:
            # the seeded schedule's 30 requests; the 5 % bound on the offered rate is test_serving_loadgen's
            # (a loaded CI host can delay this actor's last sends by tens of ms)
            assert row["n_requests"] == 30
            assert row["serving.offered_rate_req_s"] == pytest.approx(target, rel=0.25)
        else:
            assert row["serving.concurrency"] == 4 and row["serving.offered_rate_req_s"] > 10
        assert row["serving.slo_attainment"] == 1.0 and row["serving.window_accepted"] is False
        assert row["energy_total_j"] > 0 and row["serving.energy_per_slo_request_j"] is None  # window under 30 s
        assert any("rejected" in w for w in row["measurement_warnings"])

    page = write_report(result.output_dir)
    assert (page.parent / "serving_load_curves.png").stat().st_size > 2000
    summary = pq.read_table(page.parent / "summary.parquet").to_pylist()
    assert len(summary) == 2 and {s["serving.slo_attainment_n"] for s in summary} == {2}
    assert len({s["load_series"] for s in summary}) == 1  # one configuration under two loads
