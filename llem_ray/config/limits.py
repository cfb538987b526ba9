"""Upper bounds on what a config may ask for (issue 18), in one place.

Every bound is far above any real study and low enough that a mistyped or hostile value fails when
the file is loaded, in milliseconds, instead of exhausting memory or time later (in an experiment
process, or after Ray has started). The config models use them as `le=` constraints, so
docs/configuration.md lists them; the document-level ones are described there too.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from llem_ray.errors import ConfigError

STRICT_MODEL = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
"""Model config of every config model: unknown fields are errors, values are taken as typed (`true` is
not 1, `"4"` is not 4; an int may stand for a float) and every float must be finite."""


class StrictModel(BaseModel):
    """Base of every config model and section (STRICT_MODEL): a typo or a value of the wrong type is a
    pydantic ValidationError when the file is loaded."""

    model_config = STRICT_MODEL


# ---- the document -----------------------------------------------------------------------------
MAX_CONFIG_BYTES = 1_000_000
"""Largest config file accepted, bytes: a real study is a few KiB; more is a mistake or an attack."""
MAX_YAML_DEPTH = 32
"""Deepest nesting of mappings and lists in a document (aliases expanded); real studies use < 8."""
MAX_YAML_NODES = 100_000
"""Most values (scalars, mappings, lists) a document may hold once its aliases are expanded."""

# ---- the plan -----------------------------------------------------------------------------------
MAX_EXPERIMENTS = 100_000
"""Most experiments one study may define (grid points + explicit entries), counted before expansion."""
MAX_CYCLES = 1_000
"""Most cycles (`execution.n_cycles`, `--cycles`)."""
MAX_RUNS = 100_000
"""Most runs (experiments x cycles) one study may plan."""

# ---- one experiment ---------------------------------------------------------------------------------
MAX_PROMPTS = 100_000
"""Most prompts in a measured window (`n`), batches or sequences at once."""
MAX_TOKENS = 1_048_576
"""Longest prompt or output, tokens (2**20: above every context length shipped today)."""
MAX_WORKLOAD_TOKENS = 100_000_000
"""Most prompt tokens one synthetic workload may hold (n x prompt length), held in memory at once."""
MAX_WARMUP = 10_000
"""Most warm-up batches, and the largest warm-up CV window."""
MAX_BEAMS = 128
"""Widest beam search."""
MAX_SEED = 2**32 - 1
"""Largest `random_seed` (seeds are 0 .. 2**32 - 1: what NumPy, PyTorch, vLLM and TRT-LLM all accept)."""
MAX_GPUS = 64
"""Most GPUs one experiment may own (one placement bundle on one node)."""
MAX_CPUS = 1_024
"""Most CPU cores one experiment actor may reserve."""
MAX_RATE_REQ_S = 100_000.0
"""Highest request rate of the serving scenario, req/s: far above what one engine serves. A run's
requests (rate x duration) are bounded by MAX_PROMPTS."""
MAX_BURSTINESS = 1_000.0
"""Largest gamma shape of the serving scenario's arrivals (gaps' CV 1/sqrt(shape): 0.03, near-regular)."""
MAX_ENGINE_COUNT = 2**31 - 1
"""Largest count passed to an engine (blocks, ranks, sizes): engines keep them in 32-bit integers."""
MAX_BYTES = 2**50
"""Largest memory size in bytes (1 PiB)."""
MAX_GIB = 65_536.0
"""Largest memory size in GiB (64 TiB)."""

# ---- durations and retries -----------------------------------------------------------------------
MAX_GAP_S = 86_400.0
"""Longest pause between experiments or cycles, s (one day)."""
MAX_FLOOR_S = 3_600.0
"""Longest thermal floor or idle-baseline window, s (one hour)."""
MAX_TIMEOUT_S = 604_800.0
"""Longest deadline of one attempt, and longest baseline cache lifetime, s (one week)."""
MAX_RETRIES = 100
"""Most extra attempts of one run."""
MAX_SLO_MS = MAX_TIMEOUT_S * 1000
"""Loosest latency bound of a serving SLO, ms (the longest attempt deadline)."""


def check_runs(n_experiments: int, n_cycles: int, source: str) -> None:
    """Raise ConfigError unless `n_experiments` x `n_cycles` runs fit MAX_CYCLES and MAX_RUNS.

    Called before anything is planned or allocated; `source` names what set the cycles (a flag, or
    a file and field).
    """
    if not 1 <= n_cycles <= MAX_CYCLES:
        raise ConfigError(f"{source}: must be between 1 and {MAX_CYCLES:,}, got {n_cycles:,}")
    if n_experiments * n_cycles > MAX_RUNS:
        raise ConfigError(
            f"{source}: {n_experiments:,} experiment(s) x {n_cycles:,} cycle(s) = "
            f"{n_experiments * n_cycles:,} runs; the limit is {MAX_RUNS:,}"
        )
