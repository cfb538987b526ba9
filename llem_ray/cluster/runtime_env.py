"""Per-backend Ray `runtime_env`s, and the pre-flight check that each backend can run (CM-10).

vLLM and TensorRT-LLM pin different torch builds, so they cannot share one Python environment.
A study gives each backend its own environment in `runtime_envs:` (pip, py_executable, image_uri,
env_vars); Ray builds it on the nodes and starts that backend's actors in it. Before any experiment
runs, `environment_problems` checks statically that a multi-backend study isolates what must be
isolated, then runs one tiny probe task per backend, in that backend's environment, on a GPU node,
that imports nothing heavy but checks the engine is installed there (`start_probes`, then
`probe_problems`: the driver opens the results actor while they run). Every problem is reported at
once (the driver raises `PreFlightError`).

Non-GPU actors and tasks (results actor, probes) get `NO_GPU_ENV_VARS`: since Ray PR #62492 a
`num_gpus=0` worker otherwise sees every GPU of its node and could draw power on a measured one.
"""

from __future__ import annotations

import os
import time
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from llem_ray.backends import registry as backend_registry
from llem_ray.cluster.placement import ClusterInventory
from llem_ray.config.study import StudyConfig
from llem_ray.plugins import ENV_VAR as PLUGINS_ENV_VAR

NO_GPU_ENV_VARS = {"CUDA_VISIBLE_DEVICES": "", "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "1"}
"""Environment of every actor or task that must not see a GPU."""

JOB_CONFIG_ENV_VAR = "RAY_JOB_CONFIG_JSON_ENV_VAR"
"""Set by Ray's job manager in the environment of a `ray job submit` entrypoint."""


def plugin_env_vars() -> dict[str, str]:
    """`LLEM_PLUGINS` of this process, to pass on to workers (test doubles must exist there too)."""
    value = os.environ.get(PLUGINS_ENV_VAR)
    return {PLUGINS_ENV_VAR: value} if value else {}


def job_runtime_env() -> dict[str, Any] | None:
    """The job-level `runtime_env` a driver passes to `ray.init`: the plugins, if any (every worker
    of the job then loads the same test doubles). None when there is nothing to pass, and inside a
    `ray job submit` job, whose runtime_env the submitter sets (`--runtime-env-json`): Ray refuses
    to merge the same variable twice."""
    env_vars = plugin_env_vars()
    if not env_vars or JOB_CONFIG_ENV_VAR in os.environ:
        return None
    return {"env_vars": env_vars}


def experiment_runtime_env(study: StudyConfig, backend: str) -> dict[str, Any] | None:
    """The `runtime_env` of `backend`'s experiment actors: the study's for that backend (plugins added).

    None when the study gives none: the actors then use the job's environment, and Ray can start
    them from its pool of idle workers instead of a new process per environment.
    """
    if backend not in study.runtime_envs:
        return None
    env = study.runtime_envs[backend].to_ray()
    env["env_vars"] = {**plugin_env_vars(), **(env.get("env_vars") or {})}
    return env


COLD_START_ENV_VAR = "LLEM_COLD_START"
"""Set to the attempt's id in a cold-start actor's environment (its value makes the runtime_env unique)."""


def cold_start_runtime_env(env: dict[str, Any] | None, attempt_id: str) -> dict[str, Any]:
    """`env` (a backend's runtime_env, None = the job's) for a cold-start attempt (CAMP-05).

    Ray starts an actor in an idle worker only if the worker was started for the same runtime_env;
    `LLEM_COLD_START=<attempt_id>` makes this one unique, so the actor gets a process of its own
    that nothing ran in before (no pooled or pre-started worker).
    """
    cold = dict(env or {})
    cold["env_vars"] = {**plugin_env_vars(), **(cold.get("env_vars") or {}), COLD_START_ENV_VAR: attempt_id}
    return cold


def no_gpu_runtime_env() -> dict[str, Any]:
    """`runtime_env` of a non-GPU actor or task."""
    return {"env_vars": {**plugin_env_vars(), **NO_GPU_ENV_VARS}}


def _isolating_spec(study: StudyConfig, backend: str) -> dict[str, Any]:
    """The parts of `backend`'s runtime_env that give it its own Python (empty if none)."""
    spec = study.runtime_envs[backend].to_ray() if backend in study.runtime_envs else {}
    return {k: v for k, v in spec.items() if k in ("pip", "py_executable", "image_uri")}


def static_problems(study: StudyConfig) -> list[str]:
    """Problems visible from the config alone (no cluster needed)."""
    backends = {e.backend for e in study.experiments}
    problems = []
    clash = sorted(b for b in backends if backend_registry.spec(b).must_isolate)
    if len(clash) > 1:
        isolating = [_isolating_spec(study, b) for b in clash]
        given = [spec for spec in isolating if spec]
        if not given or (len(given) == len(clash) and all(spec == given[0] for spec in given)):
            problems.append(
                "this study mixes backends that cannot share one Python environment "
                f"({' and '.join(clash)}: different torch builds); give each its own environment under "
                "runtime_envs: (pip, py_executable or image_uri)"
            )
    for backend, env in sorted(study.runtime_envs.items()):
        spec = env.to_ray()
        if "image_uri" in spec and set(spec) - {"image_uri", "env_vars"}:
            problems.append(f"runtime_envs.{backend}: image_uri can only be combined with env_vars (Ray)")
        if env.py_executable and not os.path.isabs(env.py_executable.split()[0]):
            problems.append(f"runtime_envs.{backend}.py_executable must be an absolute path, got {env.py_executable!r}")
    return problems


@ray.remote(num_cpus=0, num_gpus=0, max_retries=0)
def _probe_backend(backend: str) -> str | None:
    """In the backend's environment: None if the backend can be created and the modules its spec names
    (`BackendSpec.modules`, checked with find_spec: nothing is imported) are installed."""
    try:
        backend_registry.create(backend)
        return backend_registry.missing_modules_problem(backend, "its environment")
    except Exception as exc:  # BackendError, or a plugin that fails to import
        return str(exc)


def start_probes(study: StudyConfig, inventory: ClusterInventory) -> dict[Any, str]:
    """Submit `_probe_backend` for every backend of the study on a node that has GPUs (any node if
    none); returns the pending refs by backend, for `probe_problems`. {} on a cluster with no node
    (feasibility_problems reports that)."""
    gpu_nodes = [n for n in inventory.nodes if n.gpus > 0] or list(inventory.nodes)
    if not gpu_nodes:
        return {}
    target = NodeAffinitySchedulingStrategy(gpu_nodes[0].node_id, soft=False)
    refs = {}
    for backend in sorted({e.backend for e in study.experiments}):
        env = experiment_runtime_env(study, backend) or {}
        env["env_vars"] = {**(env.get("env_vars") or {}), **NO_GPU_ENV_VARS}
        refs[_probe_backend.options(runtime_env=env, scheduling_strategy=target).remote(backend)] = backend
    return refs


def probe_problems(refs: dict[Any, str], timeout_s: float) -> list[str]:
    """Wait for the probes `start_probes` submitted; every problem they found. Building a pip
    environment can take minutes; the probes wait at most `timeout_s` seconds in all."""
    deadline_s = time.monotonic() + timeout_s
    problems = []
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline_s - time.monotonic()))
        if not ready:
            break
        backend = refs[ready[0]]
        try:
            problem = ray.get(ready[0])
        except Exception as exc:  # RuntimeEnvSetupError: pip failed, image missing, ...
            problem = f"its environment could not be set up: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        if problem:
            problems.append(f"backend '{backend}': {problem}")
    for ref in pending:
        ray.cancel(ref, force=True)
        problems.append(f"backend '{refs[ref]}': its environment was not ready within {timeout_s:.0f} s")
    return problems
