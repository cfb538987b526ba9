"""Capacity watcher: queue delay from Triton's `/metrics`, alert past a threshold.

Every `interval_s` seconds the watcher scrapes the Prometheus text and sums, per
model (all versions), the counters `nv_inference_queue_duration_us` and
`nv_inference_request_success` + `nv_inference_request_failure`. The queue
delay over the sliding window (default 300 s) is

    delay_ms = Δ queue_duration_us / Δ requests / 1000

between the newest sample and the newest sample at least `window_s` old. The
alert fires once a full window is observed and its delay exceeds
`threshold_ms`: the alert is logged (`logs/<run>/capacity.jsonl`), POSTed as JSON
to the optional webhook, and `CapacityAlertError` (exit 11) is raised with a
scale-out / rollback suggestion. A webhook that fails is logged, never fatal.
Windows with no finished request are not judged. `nv_inference_pending_request_count`,
the failure rate and `nv_gpu_utilization` (absent on CPU-only hosts) are logged too.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass

from .errors import CapacityAlertError, LaunchError
from .events import EventLog

_LINE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)')
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


class QueueDelayWindow:
    """Sliding window of one model's samples; times in seconds, delay in milliseconds."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.samples: deque[ModelSample] = deque()

    def add(self, sample: ModelSample) -> None:
        self.samples.append(sample)
        # keep exactly one sample at or beyond the window's start as the baseline
        while len(self.samples) > 1 and self.samples[1].t <= sample.t - self.window_s:
            self.samples.popleft()

    def full(self) -> bool:
        return len(self.samples) > 1 and self.samples[-1].t - self.samples[0].t >= self.window_s

    def delay_ms(self) -> float | None:
        """Mean queue delay per finished request over the window; None without requests."""
        if len(self.samples) < 2:
            return None
        first, last = self.samples[0], self.samples[-1]
        finished = last.requests - first.requests
        if finished <= 0:
            return None
        return (last.queue_us - first.queue_us) / finished / 1000.0

    def failure_rate(self) -> float | None:
        first, last = self.samples[0], self.samples[-1]
        finished = last.requests - first.requests
        return (last.failure - first.failure) / finished if finished > 0 else None


def scrape(metrics_url: str, timeout_s: float = 5.0) -> str:
    try:
        with urllib.request.urlopen(metrics_url, timeout=timeout_s) as resp:
            return resp.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        raise LaunchError(f"cannot read {metrics_url}: {exc}", remediation="is the server running? `llm-demo serve`",
                          doc="docs/capacity.md#watcher") from None


def post_webhook(url: str, payload: dict, timeout_s: float = 5.0) -> str | None:
    """POST `payload` as JSON; return None on success, else the error text."""
    req = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
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
    """Watch until an alert (raises CapacityAlertError) or `max_duration_s` passes.

    Returns the last per-model window delay (ms) when no alert fired.
    """
    windows: dict[str, QueueDelayWindow] = {}
    start = clock()
    events.emit("watch_start", metrics_url=metrics_url, threshold_ms=threshold_ms, window_s=window_s,
                interval_s=interval_s, models=models)
    last: dict[str, float | None] = {}
    while True:
        now = clock()
        metrics = parse_metrics(scrape(metrics_url))
        gpu_util = [v for _, v in metrics.get("nv_gpu_utilization", [])]
        for model, sample in per_model(metrics, now).items():
            if models and model not in models:
                continue
            window = windows.setdefault(model, QueueDelayWindow(window_s))
            window.add(sample)
            delay = window.delay_ms()
            last[model] = delay
            events.emit("sample", model=model, queue_delay_ms=delay, window_full=window.full(),
                        pending=sample.pending, failure_rate=window.failure_rate(), gpu_utilization=gpu_util or None)
            if window.full() and delay is not None and delay > threshold_ms:
                _alert(events, webhook, model, delay, threshold_ms, window_s, sample.pending)
        if max_duration_s is not None and now - start >= max_duration_s:
            events.emit("watch_end", reason="max duration reached", last_delay_ms=last)
            return last
        sleep(interval_s)


def _alert(events: EventLog, webhook: str | None, model: str, delay: float, threshold_ms: float,
           window_s: float, pending: float) -> None:
    message = (f"queue delay of model {model} averaged {delay:.1f} ms over the last {window_s:.0f} s "
               f"(threshold {threshold_ms:.1f} ms, {pending:.0f} requests pending)")
    payload = {"text": f"[llm-demo capacity alert] {message}; suggestion: {SUGGESTION}", "model": model,
               "queue_delay_ms": delay, "threshold_ms": threshold_ms, "window_s": window_s,
               "pending": pending, "suggestion": SUGGESTION}
    events.emit("alert", **payload)
    if webhook:
        error = post_webhook(webhook, events.redactor.redact_obj(payload))
        events.emit("webhook", url=webhook, delivered=error is None, error=error)
    raise CapacityAlertError(message, remediation=SUGGESTION, doc="docs/capacity.md#alerts",
                             details=payload)
