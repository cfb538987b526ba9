"""Expand and validate a 10,000-point study grid; print seconds and peak memory (issue 2).

Target on the 2-core machine: <= 5 s and <= 500 MB peak resident memory (the whole process).
Run: python benchmarks/grid_scale.py
"""

from __future__ import annotations

import resource
import time


def main() -> None:
    from llem_ray.config.sweep import expand_study

    sweep = {
        "precision": ["fp16", "bf16"],
        "n": list(range(10, 110, 10)),
        "pytorch.batch_size": [1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
        "max_output_tokens": list(range(16, 816, 16)),
    }
    points = 2 * 10 * 10 * 50
    start_s = time.perf_counter()
    study = expand_study({"model": "llem/tiny-llama", "dataset": "synthetic", "sweep": sweep})
    design_hash = study.study_design_hash
    elapsed_s = time.perf_counter() - start_s
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"grid points:        {points}")
    print(f"experiments:        {len(study.experiments)} (skipped {len(study.skipped)})")
    print(f"study_design_hash:  {design_hash}")
    print(f"expand+validate+hash: {elapsed_s:.2f} s   (target <= 5 s)")
    print(f"peak RSS:           {peak_mb:.0f} MB (target <= 500 MB)")


if __name__ == "__main__":
    main()
