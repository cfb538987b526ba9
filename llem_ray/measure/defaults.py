"""The embedded default experiment: what `llem run` runs with no arguments.

A tiny random-weight Llama (`llem/tiny-llama`, no download) on synthetic prompts, on the GPU if
there is one, else the CPU; few prompts, no thermal floor and a short baseline, so a newcomer gets
a complete result in seconds. Its numbers show the tool works, not how any real model behaves.
"""

from __future__ import annotations

from llem_ray.config.experiment import BUILTIN_TINY_MODEL, ExperimentConfig


def embedded_default_config() -> ExperimentConfig:
    """The default experiment (no output_dir: `llem run` saves it under the user config's results_dir)."""
    return ExperimentConfig(
        model=BUILTIN_TINY_MODEL,
        weights="random",
        dataset={"source": "synthetic", "input_len_tokens": 64},
        n=16,
        max_input_tokens=64,
        max_output_tokens=32,
        warmup={"n_warmup": 2, "max_output_tokens": 8, "thermal_floor_s": 0.0},
        baseline={"duration_s": 5.0},
        pytorch={"batch_size": 4},
    )
