"""The `InferenceBackend` protocol (CM-04): what the measurement protocol needs from an engine.

A backend loads one model on the devices it is given, then runs whole workloads: it does its own
batching (PyTorch: fixed batches; vLLM / TRT-LLM: continuous batching) and reports what happened.
The measurement protocol owns timing of windows and energy; the backend reports tokens and
per-request timings it alone can see.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from llem_ray.config.experiment import ExperimentConfig


@dataclass(frozen=True)
class Prompt:
    """One request's input: text (tokenised by the backend) or ready token ids (synthetic data)."""

    text: str | None = None
    token_ids: tuple[int, ...] | None = None


@dataclass(frozen=True)
class ModelInfo:
    """What `load` found out about the model.

    `vocab_size` bounds synthetic token ids (None: unknown); `notes` are remarks for the result's
    warnings (e.g. which tokenizer stood in for a random-weight model's).
    `max_concurrent_requests`: most requests the engine runs at once as it was actually configured
    (vLLM's effective `max_num_seqs`); None where the experiment's batch size says it (PyTorch).
    `prefix_caching`: whether the engine reuses KV blocks of shared prefixes (None: no such cache).
    `shape_specialised`: compiled code is specialised to batch and sequence shapes (a static KV
    cache, `torch.compile`): warm-up must then run the measured window's exact shapes.
    """

    n_parameters: int
    dtype: str
    device: str
    load_time_s: float
    vocab_size: int | None = None
    notes: tuple[str, ...] = ()
    max_concurrent_requests: int | None = None
    prefix_caching: bool | None = None
    shape_specialised: bool = False


@dataclass
class RequestTiming:
    """Timing of one request, seconds; ttft/itl None where the backend cannot observe them.

    `span_s`: (joined the running batch, first token, last token), s since the workload began,
    where the engine reports them (continuous batching: vLLM's scheduler timestamps); None when
    it does not, and the steady-state window is then rebuilt from batch times (static batching)
    or not found.
    """

    latency_s: float
    output_tokens: int
    ttft_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    span_s: tuple[float, float, float] | None = None


@dataclass
class GenerationOutput:
    """Result of running a workload: token counts, batch wall times (s) and per-request timings."""

    input_tokens: int
    output_tokens: int
    batch_latencies_s: list[float]
    requests: list[RequestTiming] = field(default_factory=list)
    texts: list[str] | None = None


@runtime_checkable
class InferenceBackend(Protocol):
    """An inference engine adapter. Raise `BackendError` with the cause on any failure."""

    name: str

    def load(self, config: ExperimentConfig, device: str) -> ModelInfo:
        """Load the model for `config` on `device` ('cuda' or 'cpu'); all visible GPUs are the experiment's."""
        ...

    def generate(self, prompts: list[Prompt], max_new_tokens: int) -> GenerationOutput:
        """Run every prompt to completion (batched the backend's way); blocks until done, GPU synchronised."""
        ...

    def prefill(self, prompts: list[Prompt]) -> GenerationOutput:
        """Run only the prefill (one forward pass per batch, no new tokens); blocks until done."""
        ...

    def unload(self) -> None:
        """Free the model and shut the engine down; must be safe to call twice."""
        ...
