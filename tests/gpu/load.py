"""A steady bf16 matmul load on CUDA device 0 for GPU tests (draws near the power cap on an H100)."""

import time

import torch


def matmul_load(seconds: float) -> None:
    """Run 8192x8192 bf16 matmuls for `seconds` s, synchronising every 20 products."""
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(20):
            a = (a @ a).clamp_(-1, 1)
        torch.cuda.synchronize()
