"""`vllm.sampling_params` of the stand-in: `RequestOutputKind` as vLLM 0.25 defines it."""

from enum import Enum


class RequestOutputKind(Enum):
    CUMULATIVE = 0
    DELTA = 1
    FINAL_ONLY = 2
