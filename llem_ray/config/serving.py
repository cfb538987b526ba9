"""The `serving:` section of an experiment: open-loop load at an SLO (`scenario: serving`).

One of two load modes: `request_rate_req_s` (open loop: requests arrive on a seeded schedule,
Poisson, or gamma-distributed gaps with `burstiness`, whatever the engine's speed) or
`concurrency` (a fixed number of requests in flight: each one finished is replaced at once).
Requests are sent for `duration_s`, then the run drains. The measurement itself is described in
docs/methodology.md ("Serving scenario"); the code is `llem_ray/scenarios/`.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from llem_ray.config.limits import MAX_BURSTINESS, MAX_PROMPTS, MAX_RATE_REQ_S, MAX_SLO_MS, MAX_TIMEOUT_S, StrictModel


class SLOConfig(StrictModel):
    """Latency bounds a request must meet to count as served within its SLO (both, when both are set)."""

    ttft_ms: float | None = Field(
        None,
        gt=0,
        le=MAX_SLO_MS,
        description="Time to first token bound, ms (send to first streamed token); None = not checked.",
    )
    tpot_ms: float | None = Field(
        None,
        gt=0,
        le=MAX_SLO_MS,
        description="Time per output token bound, ms ((last - first token time) / (tokens - 1)); None = not checked.",
    )


class ServingConfig(StrictModel):
    """Open-loop load for `scenario: serving` (see module docstring). Exactly one of rate or concurrency."""

    request_rate_req_s: float | None = Field(
        None,
        gt=0,
        le=MAX_RATE_REQ_S,
        description="Mean arrival rate, req/s: requests are sent on this schedule whether or not earlier ones have "
        "finished (open loop).",
    )
    burstiness: float = Field(
        1.0,
        gt=0,
        le=MAX_BURSTINESS,
        description="Gamma shape of the gaps between arrivals: 1 = Poisson, < 1 burstier, > 1 more regular. Rate "
        "mode only.",
    )
    concurrency: int | None = Field(
        None,
        ge=1,
        le=MAX_PROMPTS,
        description="Fixed-concurrency mode instead of a rate: keep this many requests in flight.",
    )
    duration_s: float = Field(
        60.0, gt=0, le=MAX_TIMEOUT_S, description="How long requests are sent, s; the run then drains."
    )
    warmup_requests: int = Field(
        10,
        ge=0,
        le=MAX_PROMPTS,
        description="The first requests of the run; the steady window opens when all of them have finished.",
    )
    slo: SLOConfig = Field(default_factory=SLOConfig)

    @model_validator(mode="after")
    def _one_mode(self) -> ServingConfig:
        if (self.request_rate_req_s is None) == (self.concurrency is None):
            raise ValueError(
                "set exactly one of request_rate_req_s (open-loop rate) and concurrency (fixed concurrency)"
            )
        if self.concurrency is not None and "burstiness" in self.model_fields_set:
            raise ValueError("burstiness shapes the arrivals of request_rate_req_s; it has no meaning with concurrency")
        if self.scheduled_requests() > MAX_PROMPTS:
            raise ValueError(
                f"request_rate_req_s x duration_s gives {self.scheduled_requests():,} requests; the "
                f"limit is {MAX_PROMPTS:,}"
            )
        if self.request_rate_req_s is not None and self.scheduled_requests() <= self.warmup_requests:
            raise ValueError(
                f"request_rate_req_s x duration_s gives {self.scheduled_requests()} requests, not more than "
                f"warmup_requests ({self.warmup_requests}): nothing is left to measure"
            )
        return self

    def describe(self) -> str:
        """One line for a person: the load, how long, and the SLO."""
        if self.concurrency is not None:
            load = f"fixed concurrency {self.concurrency}"
        else:
            shape = "Poisson" if self.burstiness == 1 else f"gamma shape {self.burstiness:g}"
            load = f"{self.request_rate_req_s:g} req/s ({shape})"
        bounds = [
            f"{name} <= {value:g} ms"
            for name, value in (("TTFT", self.slo.ttft_ms), ("TPOT", self.slo.tpot_ms))
            if value is not None
        ]
        return f"{load} for {self.duration_s:g} s, SLO {', '.join(bounds) or 'none'}"

    def scheduled_requests(self) -> int:
        """Requests the rate mode sends: request_rate_req_s x duration_s, rounded (0 in concurrency mode)."""
        if self.request_rate_req_s is None:
            return 0
        return round(self.request_rate_req_s * self.duration_s)
