"""deploy/kuberay-rayjob.yaml has the shape KubeRay's RayJob needs and keeps the engine's cluster rules:
the entrypoint is the study CLI with flags it accepts, the head runs no experiment, GPU workers ask for
whole GPUs, every Ray process numbers GPUs by PCI bus and hides GPUs from GPU-less workers, and the
study directory is on the head's own persistent volume."""

from __future__ import annotations

import re
import shlex
from pathlib import PurePosixPath

import pytest
import ray
import yaml

from llem_ray.study import _parser
from tests.ray.helpers import REPO_ROOT

MANIFEST = REPO_ROOT / "deploy" / "kuberay-rayjob.yaml"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
RAY_ENV = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "1"}


@pytest.fixture(scope="module")
def documents() -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    return {d["kind"]: d for d in docs}


def _containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


def test_it_is_a_rayjob_running_the_study_cli_on_this_ray(documents):
    job = documents["RayJob"]
    assert job["apiVersion"] == "ray.io/v1" and DNS_LABEL.match(job["metadata"]["name"])
    spec = job["spec"]
    argv = shlex.split(spec["entrypoint"])
    assert argv[:3] == ["python", "-m", "llem_ray.study"]
    args = _parser().parse_args(argv[3:])  # flags the CLI really has
    assert PurePosixPath(args.output).is_absolute(), "ray job submit runs in a temporary copy: absolute --output"
    assert spec["shutdownAfterJobFinishes"] is True and spec["activeDeadlineSeconds"] > 0
    assert spec["rayClusterSpec"]["rayVersion"] == ray.__version__, "the image's Ray must be this Ray"


def test_head_runs_no_experiment_and_holds_the_study_directory(documents):
    spec = documents["RayJob"]["spec"]
    head = spec["rayClusterSpec"]["headGroupSpec"]
    assert head["rayStartParams"] == {"num-cpus": "0", "num-gpus": "0"}
    (container,) = _containers(head)
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    args = _parser().parse_args(shlex.split(spec["entrypoint"])[3:])
    volumes = {v["name"]: v for v in head["template"]["spec"]["volumes"]}
    config_mounts = [name for path, name in mounts.items() if str(args.config).startswith(path + "/")]
    assert len(config_mounts) == 1 and "configMap" in volumes[config_mounts[0]], "the study file is not mounted"
    results = volumes[mounts[str(args.output)]]
    claim = documents["PersistentVolumeClaim"]
    assert results["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"], "SQLite WAL and flock need one node's disk"


def test_gpu_workers_ask_for_whole_gpus_and_every_ray_process_gets_the_gpu_rules(documents):
    cluster = documents["RayJob"]["spec"]["rayClusterSpec"]
    workers = cluster["workerGroupSpecs"]
    assert workers, "no worker group: no GPU to measure on"
    images = set()
    for group in [cluster["headGroupSpec"], *workers]:
        for container in _containers(group):
            images.add(container["image"])
            env = {e["name"]: e["value"] for e in container.get("env", [])}
            assert RAY_ENV.items() <= env.items(), f"{container['name']}: {env}"
            assert not any("subreaper" in name for name in env), "it zeroes subprocess exit codes"
    assert len(images) == 1, "head and workers must run the same image (one Python, one llem_ray)"
    for group in workers:
        assert DNS_LABEL.match(group["groupName"])
        assert 1 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        (container,) = _containers(group)
        limits, requests = container["resources"]["limits"], container["resources"]["requests"]
        gpus = limits["nvidia.com/gpu"]
        assert isinstance(gpus, int) and gpus >= 1 and requests["nvidia.com/gpu"] == gpus
