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

from llem_ray.runner import RunFlags
from llem_ray.study import _parse
from tests.ray.helpers import REPO_ROOT

MANIFEST = REPO_ROOT / "deploy" / "kuberay-rayjob.yaml"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
RAY_ENV = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "1"}


@pytest.fixture(scope="module")
def documents() -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    return {d["kind"]: d for d in docs}


def _flags(entrypoint: str) -> RunFlags:
    """The study CLI's flags of `entrypoint` (`python -m llem_ray.study ...`), parsed by the CLI itself."""
    argv = shlex.split(entrypoint)
    assert argv[:3] == ["python", "-m", "llem_ray.study"]
    flags = _parse(argv[3:])
    assert isinstance(flags, RunFlags), f"the study CLI refuses {entrypoint!r} (exit {flags})"
    return flags


def _containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


def test_it_is_a_rayjob_running_the_study_cli_on_this_ray(documents):
    job = documents["RayJob"]
    assert job["apiVersion"] == "ray.io/v1" and DNS_LABEL.match(job["metadata"]["name"])
    spec = job["spec"]
    args = _flags(spec["entrypoint"])  # flags the CLI really has
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
    args = _flags(spec["entrypoint"])
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


def test_the_resume_entrypoint_the_manifest_documents_is_one_the_cli_accepts():
    lines = [line.lstrip("# ").strip() for line in MANIFEST.read_text().splitlines()]
    (resume,) = [line for line in lines if line.startswith("python -m llem_ray.study") and "--resume" in line]
    flags = _flags(resume.replace("<study directory>", "study_20260101T000000Z"))  # the placeholder filled in
    assert flags.resume is not None and PurePosixPath(flags.resume).is_absolute() and flags.output is None
