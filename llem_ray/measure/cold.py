"""Cold starts (CAMP-05): what an experiment with `cold_start: true` must not inherit from earlier work.

A warm process reuses more than a loaded model: compiled kernels cached on disk by torch inductor,
Triton and vLLM (and CUDA's PTX JIT cache) make the next compilation of the same model far cheaper,
and a pre-started Ray worker already holds an interpreter with llem_ray imported. A cold start gets:
- no warm-up batches and no engine kernel warm-up request at load (config + engine backends);
- empty compilation caches: `fresh_compilation_caches` points `COMPILATION_CACHE_VARS` at a new
  temporary directory for the experiment and removes it afterwards;
- in a study, a worker process nothing ran in before (cluster/scheduler: a runtime_env of its own,
  so Ray cannot hand it a pooled or pre-started worker).
The model itself is loaded from its files every time (no experiment reuses another's model); the
TensorRT engine cache keeps built engines, which are the model's on-disk form, not a warm state.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

COMPILATION_CACHE_VARS: tuple[str, ...] = (
    "TORCHINDUCTOR_CACHE_DIR",
    "TRITON_CACHE_DIR",
    "VLLM_CACHE_ROOT",
    "CUDA_CACHE_PATH",
)
"""Environment variables naming the on-disk caches a cold start must find empty."""

WARM_PROCESS_NOTE = (
    "cold start in a process that had already imported torch (earlier work in this process): its CUDA "
    "context and in-memory compiled kernels may persist; a study runs every cold-start experiment in a new process"
)


@contextmanager
def fresh_compilation_caches(enabled: bool) -> Iterator[list[str]]:
    """While open, every COMPILATION_CACHE_VARS names an empty directory of its own (when `enabled`).

    Yields notes for the result (WARM_PROCESS_NOTE when torch was imported before). The previous
    values are restored and the directories removed on exit, also after a failure. Call it before
    anything initialises CUDA or compiles, so every cache is looked up under the new paths.
    """
    if not enabled:
        yield []
        return
    notes = [WARM_PROCESS_NOTE] if "torch" in sys.modules else []
    root = tempfile.mkdtemp(prefix="llem-cold-")
    saved = {name: os.environ.get(name) for name in COMPILATION_CACHE_VARS}
    for name in COMPILATION_CACHE_VARS:
        os.environ[name] = os.path.join(root, name.lower())
    try:
        yield notes
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(root, ignore_errors=True)
