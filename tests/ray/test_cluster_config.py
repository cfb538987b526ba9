"""`cluster.yaml` passes Ray's own cluster-config validation and keeps the project's GPU rules."""

from __future__ import annotations

import copy

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from tests.ray.helpers import REPO_ROOT


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load((REPO_ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_is_valid_for_the_ray_cluster_launcher(raw):
    prepared = prepare_config(copy.deepcopy(raw))
    validate_config(prepared)
    assert prepared["head_node_type"] in prepared["available_node_types"]
    broken = copy.deepcopy(prepared)
    broken["available_node_types"]["head"]["unknown_field"] = 1
    with pytest.raises(jsonschema.ValidationError):
        validate_config(broken)


def test_head_runs_no_experiment_and_gpu_workers_number_gpus_by_pci_bus(raw):
    head = raw["available_node_types"][raw["head_node_type"]]
    assert head["resources"] == {"CPU": 0, "GPU": 0}
    head_start = " ".join(raw["head_start_ray_commands"])
    assert "--num-gpus=0" in head_start and "--num-cpus=0" in head_start and "--dashboard-host=127.0.0.1" in head_start
    workers = {k: v for k, v in raw["available_node_types"].items() if k != raw["head_node_type"]}
    assert sum(v.get("min_workers", 0) for v in workers.values()) >= 1, "no GPU worker starts with the cluster"
    for command in (raw["worker_start_ray_commands"][-1], raw["head_start_ray_commands"][-1]):
        for setting in (
            "CUDA_DEVICE_ORDER=PCI_BUS_ID",
            "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=1",
            "llem_ray.energy.amd_guard",
        ):
            assert setting in command
    assert "subreaper" not in raw["worker_start_ray_commands"][-1]  # it zeroes subprocess exit codes


def test_every_node_installs_this_checkout_and_shares_the_auth_token(raw):
    mounts = raw["file_mounts"]
    assert mounts["/home/ubuntu/llem_ray"] == "." and "/home/ubuntu/.ray/auth_token" in mounts
    assert any('pip install -e "/home/ubuntu/llem_ray[pytorch]"' in c for c in raw["setup_commands"])
