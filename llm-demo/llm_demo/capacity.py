"""Capacity watcher: queue delay from Triton's `/metrics`, alert when it stays above a threshold.

Every `interval_s` seconds the watcher scrapes the Prometheus text and sums, per
model (all versions), the counters `nv_inference_queue_duration_us` and
`nv_inference_request_success` + `nv_inference_request_failure`, and the gauge
`nv_inference_pending_request_count`. Two consecutive scrapes bound one interval,
whose queue delay is

    delay_ms = Δ queue_duration_us / Δ finished requests / 1000

An interval is *above* the threshold when that delay exceeds `threshold_ms`, or
when no request finished in it while requests were pending at its end (a queue
that does not drain: the worst case, whose delay is unknown and growing). Any
other interval, or counters that went backwards (a restart or reload), ends the
streak. The alert fires as soon as the model has been above the threshold
continuously for `window_s` seconds (default 300: "queue delay exceeds the
threshold for five minutes"), measured from the start of the first interval of
the streak: it is logged (`logs/<run>/capacity.jsonl`), POSTed as JSON to the
optional webhook, and `CapacityAlertError` (exit 11) is raised with a scale-out /
rollback suggestion. A webhook that fails is logged, never fatal. The failure
rate and `nv_gpu_utilization` (absent on CPU-only hosts) are logged with every
sample. `clock` and `sleep` are injectable (monotonic seconds).
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from .errors import CapacityAlertError, LaunchError
from .events import EventLog

_LINE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

SUGGESTION = (
    "scale out (raise instance_group count or max_batch_size, add a Triton replica behind the load "
    "balancer) or, if the delay started with a new model version, roll it back "
    "(`llm-demo canary --rollback`); see docs/capacity.md"
)


def parse_metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus text exposition -> {metric name: [(labels, value), ...]}."""
    metrics: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m:
            labels = dict(_LABEL.findall(m.group("labels") or ""))
            metrics[m.group("name")].append((labels, float(m.group("value"))))
    return dict(metrics)


@dataclass
class ModelSample:
    """Counters of one model at one time (`t` monotonic seconds)."""

    t: float
    queue_us: float
    success: float
    failure: float
    pending: float

    @property
    def requests(self) -> float:
        return self.success + self.failure


def per_model(metrics: dict, t: float) -> dict[str, ModelSample]:
    """Sum the counters over versions, per model."""
    out: dict[str, ModelSample] = {}

    def add(metric: str, attr: str) -> None:
        for labels, value in metrics.get(metric, []):
            model = labels.get("model")
            if model is None:
                continue
            sample = out.setdefault(model, ModelSample(t, 0.0, 0.0, 0.0, 0.0))
            setattr(sample, attr, getattr(sample, attr) + value)

    add("nv_inference_queue_duration_us", "queue_us")
    add("nv_inference_request_success", "success")
    add("nv_inference_request_failure", "failure")
    add("nv_inference_pending_request_count", "pending")
    return out


@dataclass
class Interval:
    """One interval between two scrapes of a model: delay in ms (None: no request finished)."""

    delay_ms: float | None
    finished: float
    pending: float
    failure_rate: float | None
    above: bool


class SustainedDelay:
    """Tracks whether one model's queue delay stayed above `threshold_ms` for `window_s` seconds
    (see the module docstring); times are the samples' `t` in seconds."""

    def __init__(self, threshold_ms: float, window_s: float) -> None:
        self.threshold_ms = threshold_ms
        self.window_s = window_s
        self.last: ModelSample | None = None
        self.since: float | None = None  # start of the current streak of intervals above the threshold

    def add(self, sample: ModelSample) -> Interval | None:
        """Close the interval that ends at `sample` and return it (None for the first sample)."""
        prev, self.last = self.last, sample
        if prev is None:
            return None
        finished = sample.requests - prev.requests
        queued_us = sample.queue_us - prev.queue_us
        restarted = finished < 0 or queued_us < 0  # counters restarted: nothing to judge in this interval
        delay = queued_us / finished / 1000.0 if finished > 0 and not restarted else None
        rate = (sample.failure - prev.failure) / finished if finished > 0 and not restarted else None
        if restarted:
            above = False
        else:
            above = delay > self.threshold_ms if delay is not None else sample.pending > 0
        if not above:
            self.since = None
        elif self.since is None:
            self.since = prev.t
        return Interval(delay, finished, sample.pending, rate, above)

    def above_for_s(self) -> float:
        """Seconds the current streak has lasted (0 when the last interval was not above)."""
        return self.last.t - self.since if self.since is not None and self.last is not None else 0.0

    def alerting(self) -> bool:
        return self.since is not None and self.above_for_s() >= self.window_s


def scrape(metrics_url: str, timeout_s: float = 5.0) -> str:
    try:
        with urllib.request.urlopen(metrics_url, timeout=timeout_s) as resp:
            return resp.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        raise LaunchError(
            f"cannot read {metrics_url}: {exc}",
            remediation="is the server running? `llm-demo serve`",
            doc="docs/capacity.md#watcher",
        ) from None


def post_webhook(url: str, payload: dict, timeout_s: float = 5.0) -> str | None:
    """POST `payload` as JSON; return None on success, else the error text."""
    req = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout_s):
            return None
    except (urllib.error.URLError, OSError) as exc:
        return str(exc)


def watch(
    metrics_url: str,
    events: EventLog,
    *,
    threshold_ms: float,
    window_s: float = 300.0,
    interval_s: float = 5.0,
    max_duration_s: float | None = None,
    models: list[str] | None = None,
    webhook: str | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, float | None]:
    """Watch until an alert (raises CapacityAlertError, exit 11) or `max_duration_s` seconds pass.

    Returns each model's last interval queue delay (ms; None: no request finished in it) when no
    alert fired. An unreachable metrics endpoint raises LaunchError (exit 7).
    """
    trackers: dict[str, SustainedDelay] = {}
    start = clock()
    events.emit(
        "watch_start",
        metrics_url=metrics_url,
        threshold_ms=threshold_ms,
        window_s=window_s,
        interval_s=interval_s,
        models=models,
    )
    last: dict[str, float | None] = {}
    while True:
        now = clock()
        metrics = parse_metrics(scrape(metrics_url))
        gpu_util = [v for _, v in metrics.get("nv_gpu_utilization", [])]
        for model, sample in per_model(metrics, now).items():
            if models and model not in models:
                continue
            tracker = trackers.setdefault(model, SustainedDelay(threshold_ms, window_s))
            interval = tracker.add(sample)
            if interval is None:
                continue
            last[model] = interval.delay_ms
            events.emit(
                "sample",
                model=model,
                queue_delay_ms=interval.delay_ms,
                finished=interval.finished,
                pending=interval.pending,
                above_threshold=interval.above,
                above_for_s=tracker.above_for_s(),
                failure_rate=interval.failure_rate,
                gpu_utilization=gpu_util or None,
            )
            if tracker.alerting():
                _alert(events, webhook, model, interval, tracker)
        if max_duration_s is not None and now - start >= max_duration_s:
            events.emit("watch_end", reason="max duration reached", last_delay_ms=last)
            return last
        sleep(interval_s)


def _alert(events: EventLog, webhook: str | None, model: str, interval: Interval, tracker: SustainedDelay) -> None:
    latest = (
        f"last interval {interval.delay_ms:.1f} ms"
        if interval.delay_ms is not None
        else "no request finished in the last interval"
    )
    message = (
        f"queue delay of model {model} stayed above {tracker.threshold_ms:.1f} ms for "
        f"{tracker.above_for_s():.0f} s (window {tracker.window_s:.0f} s; {latest}; "
        f"{interval.pending:.0f} requests pending)"
    )
    payload = {
        "text": f"[llm-demo capacity alert] {message}; suggestion: {SUGGESTION}",
        "model": model,
        "queue_delay_ms": interval.delay_ms,
        "threshold_ms": tracker.threshold_ms,
        "above_for_s": tracker.above_for_s(),
        "window_s": tracker.window_s,
        "pending": interval.pending,
        "suggestion": SUGGESTION,
    }
    events.emit("alert", **payload)
    if webhook:
        error = post_webhook(webhook, events.redactor.redact_obj(payload))
        events.emit("webhook", url=webhook, delivered=error is None, error=error)
    raise CapacityAlertError(message, remediation=SUGGESTION, doc="docs/capacity.md#alerts", details=payload)
