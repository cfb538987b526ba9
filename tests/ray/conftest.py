"""Fixtures for the Ray study-engine tests: real Ray on 127.0.0.1, started once per module.

`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` (set before Ray is imported) keeps every node on loopback.
Test doubles reach the workers through the job's runtime_env (`LLEM_PLUGINS=tests.fakes`); this
pytest process registers them too (`helpers`), to validate `backend: fake`: they have names of their
own, so nothing real is shadowed (the unit tests' fixtures remove them before each unit test).
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

# isort: off
import llem_ray  # noqa: E402,F401  (installs the amdsmi guard before Ray is imported: keep it first)

# isort: on
import pytest  # noqa: E402
import ray  # noqa: E402

from tests.ray.helpers import PLUGINS  # noqa: E402


@pytest.fixture(scope="module")
def ray_4gpu():
    """One local Ray node with 4 logical GPUs and 8 logical CPUs for the whole module."""
    ray.init(address="local", num_cpus=8, num_gpus=4, include_dashboard=False, runtime_env=PLUGINS, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_cluster():
    """A simulated cluster: a head without GPUs and two worker nodes with 2 logical GPUs each."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    workers = [cluster.add_node(num_cpus=2, num_gpus=2) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, runtime_env=PLUGINS, log_to_driver=False)
    yield cluster, workers
    ray.shutdown()
    cluster.shutdown()
