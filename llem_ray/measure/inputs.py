"""Pre-flight checks that need only the file system (CM-29/30, issue 18).

Run where a study's driver starts, before Ray, and where `llem run experiment.yaml` starts, before
the model loads, so a wrong path costs no cluster time and loses no measurement:
- a dataset file exists, is a file, and its first records parse (`datasets.check_accessible`);
- a local model path (absolute, `./`, `~`, or an existing relative path) is a directory that holds a
  `config.json`; a local LoRA adapter path holds an `adapter_config.json`;
- the output directory lies outside /proc, /sys and /dev once symlinks are resolved, and its nearest
  existing ancestor is a writable directory.
Each check returns problems as strings; the caller raises one PreFlightError with all of them.
On a cluster, datasets and local models must be at the same path on the driver's node as on the
GPU nodes (the cluster launcher syncs the checkout to every node; use shared storage for the rest).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from llem_ray import datasets
from llem_ray.backends import shapes
from llem_ray.config import guards
from llem_ray.config.experiment import ExperimentConfig

MODEL_MARKER = "config.json"
"""A local model directory holds this file (Hugging Face checkpoints and TRT-LLM engine directories)."""
ADAPTER_MARKER = "adapter_config.json"
"""A local LoRA adapter directory holds this file (PEFT)."""


def _is_local(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or Path(name).expanduser().exists()


def local_path_problem(name: str, marker: str, what: str) -> str | None:
    """Why the local path `name` does not hold a `what` (None when it does, or `name` is a hub id)."""
    if name.startswith(shapes.PREFIX) or not _is_local(name):
        return None
    path = Path(name).expanduser()
    if not path.exists():
        return f"{what} '{name}': no such directory"
    if not path.is_dir():
        return f"{what} '{name}' is not a directory"
    if not (path / marker).is_file():
        return f"{what} '{name}' holds no {marker}: not a {what} directory"
    return None


def output_dir_problem(path: str | Path) -> str | None:
    """Why nothing can be written under `path` (a kernel file system, a file in the way, no permission)."""
    try:
        resolved = Path(path).expanduser().resolve()
        under = guards.system_dir(str(resolved))
        if under:
            return f"output directory {path} lies under {under} (a kernel file system)"
        existing = resolved
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            return f"output directory {path}: {existing} is not a directory"
        if not os.access(existing, os.W_OK | os.X_OK):
            return f"output directory {path}: {existing} is not writable"
    except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, a name the OS refuses
        return f"output directory {path}: {exc}"
    return None


def experiment_problems(config: ExperimentConfig, *, fetch: bool) -> list[str]:
    """Problems with the dataset, the local model and the local adapter of one experiment.

    `fetch`: may download the built-in aienergyscore dataset (datasets.check_accessible).
    """
    problems = []
    dataset = datasets.check_accessible(config, fetch=fetch)
    if dataset:
        problems.append(f"dataset: {dataset}")
    model = local_path_problem(config.model, MODEL_MARKER, "model")
    if model:
        problems.append(model)
    adapter = config.lora and local_path_problem(config.lora.adapter, ADAPTER_MARKER, "LoRA adapter")
    if adapter:
        problems.append(adapter)
    return problems


def study_problems(experiments: Iterable[ExperimentConfig], output_dir: Path) -> list[str]:
    """Every problem of a study's inputs and output directory, each reported once (the driver's pre-flight)."""
    problems: list[str] = []
    seen: set[tuple] = set()
    for config in experiments:
        inputs = (config.dataset.source, config.dataset.text_field, config.model, config.lora and config.lora.adapter)
        if inputs in seen:
            continue
        seen.add(inputs)
        problems += [p for p in experiment_problems(config, fetch=False) if p not in problems]
    output = output_dir_problem(output_dir)
    return [*problems, output] if output else problems
