"""A plugin backend, 'echo': one module and one registration (`LLEM_PLUGINS=tests.echo_backend`).

It shows what adding a backend takes: a section model, a backend class and a `BackendSpec` naming
both, registered under the backend's own name. The engine is a clock, not a model: it runs requests
`echo.max_concurrent` at a time (default 4), each producing `max_new_tokens` tokens one step of
`echo.step_ms` milliseconds apart (default 1 ms), and reports every request's span as a continuous-
batching engine does; it needs no GPU, so the measured energy is whatever meter the host has (none
on a CPU-only host: the energy fields are then null).
"""

from __future__ import annotations

import math
import time

from pydantic import Field

from llem_ray.backends import registry
from llem_ray.backends.protocol import GenerationOutput, ModelInfo, Prompt, RequestTiming
from llem_ray.backends.spec import BackendSpec, Section

ECHO_VOCAB_SIZE = 256
"""Synthetic token ids stay below this."""


class EchoConfig(Section):
    """The `echo:` section."""

    step_ms: float | None = Field(None, gt=0, le=1000, description="Time per decoding step, ms (default 1).")
    max_concurrent: int | None = Field(None, ge=1, le=1024, description="Requests run at once (default 4).")


class EchoBackend:
    """Requests in waves of `max_concurrent`, `step_ms` per token (see module docstring)."""

    name = "echo"

    def __init__(self) -> None:
        self._step_s = 0.001
        self._slots = 4

    def load(self, config, device: str) -> ModelInfo:
        section = config.section or EchoConfig()
        self._step_s = (section.step_ms or 1.0) / 1000
        self._slots = section.max_concurrent or 4
        return ModelInfo(0, "none", device, 0.0, vocab_size=ECHO_VOCAB_SIZE, max_concurrent_requests=self._slots)

    @staticmethod
    def _input_tokens(prompts: list[Prompt]) -> int:
        return sum(len(p.token_ids) if p.token_ids is not None else len((p.text or "").split()) for p in prompts)

    def generate(self, prompts: list[Prompt], max_new_tokens: int) -> GenerationOutput:
        wave_s = max_new_tokens * self._step_s
        waves = math.ceil(len(prompts) / self._slots)
        time.sleep(waves * wave_s)
        requests = []
        for i in range(len(prompts)):
            start_s = (i // self._slots) * wave_s
            span = (start_s, start_s + self._step_s, start_s + wave_s)
            requests.append(
                RequestTiming(wave_s, max_new_tokens, self._step_s, [self._step_s] * (max_new_tokens - 1), span_s=span)
            )
        return GenerationOutput(self._input_tokens(prompts), max_new_tokens * len(prompts), [wave_s] * waves, requests)

    def prefill(self, prompts: list[Prompt]) -> GenerationOutput:
        waves = math.ceil(len(prompts) / self._slots)
        time.sleep(waves * self._step_s)
        return GenerationOutput(self._input_tokens(prompts), 0, [self._step_s] * waves)

    def unload(self) -> None:
        """Nothing to free."""


registry.register(
    BackendSpec(
        name="echo",
        section=EchoConfig,
        factory=EchoBackend,
        precisions=("fp32", "fp16", "bf16"),
        decoding_modes=("greedy",),
        batch_size_field="max_concurrent",
    )
)
