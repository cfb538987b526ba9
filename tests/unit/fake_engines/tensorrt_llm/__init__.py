"""A stand-in `tensorrt_llm` package for adapter tests: the documented LLM API, no GPU, no MPI.

`LLM(**kwargs)` (PyTorch runtime) rejects argument names `llmapi.TorchLlmArgs` lacks;
`generate(inputs, sampling_params, use_tqdm=...)` returns `RequestOutput`s whose completions carry
`request_perf_metrics.timing_metrics` (datetime.timedelta time points) when
`return_perf_metrics=True`; `tokenizer` is None with `skip_tokenizer_init`; `shutdown()` ends it.

Deterministic: a request yields `min_tokens` tokens when set, else half of `max_tokens`; request i
arrives at ARRIVAL_S + i ms, reaches its first token FIRST_TOKEN_S later, then one token every
TOKEN_INTERVAL_S. Every call is appended to `EVENTS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from tensorrt_llm import llmapi

__version__ = "1.1.0"
ARRIVAL_S = 50.0
FIRST_TOKEN_S = 0.02
TOKEN_INTERVAL_S = 0.004
EVENTS: list[tuple[str, Any]] = []


@dataclass(kw_only=True)
class SamplingParams:
    end_id: int | None = None
    pad_id: int | None = None
    max_tokens: int = 32
    min_tokens: int | None = None
    n: int = 1
    best_of: int | None = None
    use_beam_search: bool = False
    top_k: int | None = None
    top_p: float | None = None
    temperature: float | None = None
    seed: int | None = None
    repetition_penalty: float | None = None
    return_perf_metrics: bool = False
    detokenize: bool = True


@dataclass
class TimingMetrics:
    arrival_time: timedelta
    first_scheduled_time: timedelta
    first_token_time: timedelta
    last_token_time: timedelta


@dataclass
class RequestPerfMetrics:
    timing_metrics: TimingMetrics


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None = "length"
    request_perf_metrics: RequestPerfMetrics | None = None


@dataclass
class RequestOutput:
    request_id: int
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool = True


class _Tokenizer:
    def encode(self, text: str) -> list[int]:
        return [ord(c) % 200 + 3 for c in text]


class LLM:
    ARGS = llmapi.TorchLlmArgs

    def __init__(self, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - set(self.ARGS.model_fields))
        if unknown:
            raise ValueError(f"{self.ARGS.__name__} got unknown arguments: {unknown}")
        self.kwargs = kwargs
        self.tokenizer = None if kwargs.get("skip_tokenizer_init") else _Tokenizer()
        self.shut_down = False
        self._next_id = 0
        EVENTS.append((f"init:{type(self).__name__}", kwargs))

    def generate(
        self, inputs: list[Any], sampling_params: SamplingParams | None = None, use_tqdm: bool = True
    ) -> list[RequestOutput]:
        if self.shut_down:
            raise RuntimeError("LLM is shut down")
        params = sampling_params or SamplingParams()
        EVENTS.append(("generate", {"inputs": inputs, "params": params}))
        outputs = []
        for i, prompt in enumerate(inputs):
            n = params.min_tokens or max(1, params.max_tokens // 2)
            perf = None
            if params.return_perf_metrics:
                arrival = ARRIVAL_S + i / 1000
                first = arrival + FIRST_TOKEN_S
                perf = RequestPerfMetrics(
                    TimingMetrics(
                        timedelta(seconds=arrival),
                        timedelta(seconds=arrival),
                        timedelta(seconds=first),
                        timedelta(seconds=first + TOKEN_INTERVAL_S * (n - 1)),
                    )
                )
            completion = CompletionOutput(0, "", [9] * n, request_perf_metrics=perf)
            outputs.append(RequestOutput(self._next_id, list(prompt["prompt_token_ids"]), [completion]))
            self._next_id += 1
        return outputs

    def shutdown(self) -> None:
        EVENTS.append(("shutdown", type(self).__name__))
        self.shut_down = True
