"""Keep a broken `amdsmi` from killing Ray on non-AMD hosts.

`pip install zeus` pulls in `amdsmi`. On a host without AMD's `libamd_smi.so` (every NVIDIA or CPU
host) `import amdsmi` raises `KeyError: 'libamd_smi.so'` instead of ImportError. Ray's AMD probe
(`ray/_private/thirdparty/pyamdsmi`, reached from `ray.init()` and from every worker's start-up)
only catches ImportError, so with the `zeus` extra installed `ray.init()` crashes, and so do the
dashboard, the agent and every worker process Ray starts.

The fix works for every Python process of the cluster without touching Ray or Zeus: a one-file
stand-in package `amdsmi` (in `_amd_shim/`) is put first on `sys.path` and on `PYTHONPATH`, which
every process Ray starts inherits. The stand-in loads the real `amdsmi` and, if that fails with
anything but ImportError, raises ImportError instead; on an AMD host the real module is returned
unchanged. `import llem_ray` calls `install()`, so every llem_ray entry point (CLI, API, the study
driver, Ray workers that unpickle llem_ray code) is covered before Ray starts.

Not covered: a process that starts Ray before importing llem_ray, and `ray start` run by hand on a
cluster node. For those, put the directory first on PYTHONPATH yourself:
`export PYTHONPATH=$(python -m llem_ray.energy.amd_guard)${PYTHONPATH:+:$PYTHONPATH}`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SHIM_DIR = Path(__file__).resolve().parent / "_amd_shim"
"""Directory holding the stand-in `amdsmi` package; goes first on sys.path and PYTHONPATH."""


def install() -> None:
    """Put `SHIM_DIR` first on this process's `sys.path` and in `os.environ['PYTHONPATH']`.

    Idempotent and cheap (no import of amdsmi, Ray or Zeus). Child processes, including every process
    Ray starts from this one, inherit the PYTHONPATH entry. Never raises.
    """
    shim = str(SHIM_DIR)
    if shim not in sys.path:
        sys.path.insert(0, shim)
    entries = [e for e in os.environ.get("PYTHONPATH", "").split(os.pathsep) if e]
    if shim not in entries:
        os.environ["PYTHONPATH"] = os.pathsep.join([shim, *entries])


if __name__ == "__main__":
    print(SHIM_DIR)
