"""GPU synchronisation: the one place llem_ray waits for queued device work (CM-15).

Never imports torch itself: a process that has not imported it (vLLM and TensorRT-LLM engines run
in their own processes, the driver never uses CUDA) has no CUDA work of its own to wait for.
"""

from __future__ import annotations

import sys


def synchronize(device: str) -> None:
    """Wait for every visible CUDA device to finish its queued work (no-op on CPU or before CUDA init).

    `device` is the experiment's resolved device ('cuda' or 'cpu'). Raises whatever
    `torch.cuda.synchronize` raises (a CUDA error from the queued work).
    """
    torch = sys.modules.get("torch")
    if device == "cuda" and torch is not None and torch.cuda.is_initialized():
        for index in range(torch.cuda.device_count()):
            torch.cuda.synchronize(index)
