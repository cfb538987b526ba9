"""Golden samples: recorded reference outputs for the warm-up prompts.

A golden file (default `state/golden/<model>.json`) holds

    {"model": "<name>", "recorded_at": "<ISO UTC>", "config_hash": "<sha256>",
     "samples": [{"prompt": "...", "max_tokens": 16, "output": "..."}]}

Comparison uses `difflib.SequenceMatcher.ratio()` (0.0 = nothing in common,
1.0 = identical text) per prompt; a sample deviates when its similarity is
below `threshold`. Sampling must be greedy for goldens to be reproducible.
A prompt without a golden entry counts as missing (reported, not a deviation).
Failure mode: a malformed golden file raises `ConfigError` (exit 2).
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import ConfigError
from .paths import iso, read_json, utc_now, write_json_atomic

GUIDANCE = (
    "The served model no longer reproduces its golden outputs. If the model, tokenizer, precision or "
    "build flags changed on purpose, review the divergent outputs and re-record with "
    "`llm-demo warmup --record-golden`. Otherwise investigate before sending traffic: compare "
    "state/engine-manifest.json and state/cache-manifest.json hashes with the run that recorded the "
    "goldens, check that sampling is greedy, and look at logs/<run>/triton.log."
)


@dataclass
class Comparison:
    """Result for one prompt; `similarity` in [0, 1], None when no golden exists."""

    prompt: str
    expected: str | None
    actual: str
    similarity: float | None
    deviates: bool


def similarity(expected: str, actual: str) -> float:
    """Text similarity in [0, 1] (difflib ratio)."""
    return difflib.SequenceMatcher(None, expected, actual, autojunk=False).ratio()


def load_golden(path: Path) -> dict[str, dict]:
    """Prompt -> sample of a golden file; {} when the file does not exist."""
    data = read_json(path)
    if data is None:
        return {}
    try:
        return {s["prompt"]: s for s in data["samples"]}
    except (KeyError, TypeError) as exc:
        raise ConfigError(
            f"golden file {path} is malformed ({exc!r})",
            remediation="re-record it with `llm-demo warmup --record-golden`",
            doc="docs/usage.md#golden-samples",
        ) from None


def record_golden(path: Path, model: str, samples: list[dict], config_hash: str | None) -> Path:
    """Write samples ({"prompt", "max_tokens", "output"}) as the new golden file."""
    return write_json_atomic(
        path, {"model": model, "recorded_at": iso(utc_now()), "config_hash": config_hash, "samples": samples}
    )


def compare(golden: dict[str, dict], outputs: dict[str, str], threshold: float) -> list[Comparison]:
    """Compare `outputs` (prompt -> text) with `golden` at `threshold` (0..1)."""
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(
            f"golden threshold must be within [0, 1], got {threshold}", doc="docs/usage.md#golden-samples"
        )
    result = []
    for prompt, actual in outputs.items():
        sample = golden.get(prompt)
        if sample is None:
            result.append(Comparison(prompt, None, actual, None, False))
            continue
        score = similarity(sample["output"], actual)
        result.append(Comparison(prompt, sample["output"], actual, round(score, 4), score < threshold))
    return result


def write_divergence(path: Path, comparisons: list[Comparison], threshold: float, golden_path: Path) -> Path:
    """Save the divergent outputs, with the guidance, for investigation."""
    return write_json_atomic(
        path,
        {
            "golden_file": str(golden_path),
            "threshold": threshold,
            "guidance": GUIDANCE,
            "divergent": [asdict(c) for c in comparisons if c.deviates],
        },
    )
