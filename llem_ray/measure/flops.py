"""FLOPs of the measured window (CM-26..28): reference metadata, not a primary metric.

PaLM approximation (Chowdhery et al. 2022, appendix B): a forward pass costs about 2 x N FLOPs per
token processed, N = parameter count. Tokens processed = input tokens (prefill) + output tokens
(decode, one forward step each); warm-up tokens are never passed in (CM-28). Attention's
sequence-length term is ignored, hence confidence 'medium'; beam search multiplies decode work by
the beam width, hence 'low'.
"""

from __future__ import annotations

from llem_ray.results.schema import FlopsResult

METHOD = "palm_2n_per_token"


def estimate_flops(n_parameters: int, input_tokens: int, output_tokens: int, num_beams: int = 1) -> FlopsResult | None:
    """FLOPs of a window that processed the given tokens; None when nothing was produced."""
    if n_parameters <= 0 or output_tokens <= 0:
        return None
    total = 2.0 * n_parameters * (input_tokens + output_tokens * num_beams)
    return FlopsResult(
        total_flops=total,
        flops_per_output_token=total / output_tokens,
        method=METHOD if num_beams == 1 else f"{METHOD}_x{num_beams}_beams",
        confidence="medium" if num_beams == 1 else "low",
    )
