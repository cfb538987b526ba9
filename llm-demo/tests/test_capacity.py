"""Capacity watcher: Prometheus parsing, the sustained-delay rule (unit, and over 300 s of an injected
clock against a scripted /metrics endpoint), and a real forced queue delay on Triton."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from conftest_triton import free_port, triton_options
from triton_models import write_test_repository
from typer.testing import CliRunner

from llm_demo.capacity import ModelSample, SustainedDelay, parse_metrics, per_model, watch
from llm_demo.cli import app
from llm_demo.client import TritonTextClient
from llm_demo.errors import CapacityAlertError, ExitCode
from llm_demo.events import EventLog, read_events

METRICS = """# HELP nv_inference_queue_duration_us Cumulative inference queuing duration in microseconds
# TYPE nv_inference_queue_duration_us counter
nv_inference_queue_duration_us{model="slow",version="1"} 3000
nv_inference_queue_duration_us{model="slow",version="2"} 1000
nv_inference_request_success{model="slow",version="1"} 3
nv_inference_request_failure{model="slow",version="1"} 1
nv_inference_pending_request_count{model="slow",version="1"} 2
"""


def test_parse_and_sum_over_versions():
    sample = per_model(parse_metrics(METRICS), t=5.0)["slow"]
    assert (sample.queue_us, sample.success, sample.failure, sample.pending) == (4000, 3, 1, 2)


def samples(*rows):
    """ModelSample per (t_s, queue_ms_total, finished_total, pending)."""
    return [ModelSample(t, queue_ms * 1000.0, finished, 0.0, pending) for t, queue_ms, finished, pending in rows]


def test_streak_needs_every_interval_above_for_the_whole_window():
    tracker = SustainedDelay(threshold_ms=100, window_s=30)
    first, *rest = samples((0, 0, 0, 0), (10, 2000, 10, 0), (20, 4000, 20, 0), (30, 6000, 30, 0))
    assert tracker.add(first) is None
    intervals = [tracker.add(sample) for sample in rest]
    assert [i.delay_ms for i in intervals] == [200.0, 200.0, 200.0]
    assert tracker.above_for_s() == 30 and tracker.alerting()

    broken = SustainedDelay(threshold_ms=100, window_s=30)
    rows = samples((0, 0, 0, 0), (10, 2000, 10, 0), (20, 2100, 20, 0), (30, 4100, 30, 0), (40, 6100, 40, 0))
    for sample in rows:
        broken.add(sample)
        assert not broken.alerting()  # the 10 ms interval (20 s) restarted the streak
    assert broken.above_for_s() == 20


def test_queue_without_completions_counts_as_above_an_idle_one_does_not():
    stuck = SustainedDelay(threshold_ms=100, window_s=20)
    for sample in samples((0, 0, 5, 1), (10, 0, 5, 2), (20, 0, 5, 3)):
        stuck.add(sample)
    assert stuck.alerting() and stuck.last.pending == 3
    idle = SustainedDelay(threshold_ms=100, window_s=20)
    for sample in samples((0, 0, 5, 0), (10, 0, 5, 0), (20, 0, 5, 0)):
        interval = idle.add(sample)
    assert interval.delay_ms is None and not interval.above and not idle.alerting()


def test_counters_that_go_backwards_end_the_streak():
    tracker = SustainedDelay(threshold_ms=100, window_s=20)
    for sample in samples((0, 0, 0, 0), (10, 2000, 10, 0), (20, 0, 0, 0)):  # a restart resets the counters
        interval = tracker.add(sample)
    assert interval.delay_ms is None and not interval.above and tracker.above_for_s() == 0


class ScriptedTriton:
    """A /metrics endpoint on 127.0.0.1 whose counters advance with an injected clock: `sleep(s)` moves
    the time on and adds what `phase(t)` says happened in [t, t + s): (finished requests, queue ms per
    finished request, pending requests at the end)."""

    def __init__(self, phase):
        self.phase, self.t = phase, 0.0
        self.queue_us = self.success = self.pending = 0.0
        script = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = (
                    f'nv_inference_queue_duration_us{{model="m",version="1"}} {script.queue_us}\n'
                    f'nv_inference_request_success{{model="m",version="1"}} {script.success}\n'
                    f'nv_inference_pending_request_count{{model="m",version="1"}} {script.pending}\n'
                ).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/metrics"

    def clock(self):
        return self.t

    def sleep(self, seconds):
        finished, queue_ms, self.pending = self.phase(self.t)
        self.success += finished
        self.queue_us += finished * queue_ms * 1000.0
        self.t += seconds

    def watch(self, workspace, **kw):
        """`watch` with the production defaults (500 ms over 300 s, 15 s scrapes), for 900 s at most."""
        kw = {"threshold_ms": 500.0, "interval_s": 15.0, "max_duration_s": 900.0, **kw}
        try:
            return watch(
                self.url, EventLog(workspace, "run-scripted", "capacity"), clock=self.clock, sleep=self.sleep, **kw
            )
        finally:
            self.server.shutdown()
            self.server.server_close()


def test_default_window_alerts_after_300_s_above_not_before(workspace):
    script = ScriptedTriton(lambda t: (10, 600.0, 4))
    with pytest.raises(CapacityAlertError) as info:
        script.watch(workspace)
    assert script.t == 300.0  # scrapes at 0, 15, ..., 285 did not alert; the one at 300 did
    assert info.value.details["above_for_s"] == 300.0 and info.value.details["window_s"] == 300.0
    assert info.value.details["queue_delay_ms"] == pytest.approx(600.0)
    assert "stayed above 500.0 ms for 300 s" in info.value.message


def test_a_100_s_spike_does_not_alert(workspace):
    # 2 s of queueing per request for the first 100 s, then 10 ms: the mean over the first 300 s is
    # far above 500 ms (a mean-based check fires), but the delay was not above it for 300 s
    script = ScriptedTriton(lambda t: (10, 2000.0 if t < 100 else 10.0, 0))
    last = script.watch(workspace)
    assert script.t == 900.0 and last == {"m": pytest.approx(10.0)}
    spike_ms, calm_ms = 7 * 10 * 2000.0, 13 * 10 * 10.0  # intervals starting at 0..90 s, then 105..285 s
    assert (spike_ms + calm_ms) / (20 * 10) > 500.0


def test_growing_queue_with_no_completions_alerts(workspace):
    script = ScriptedTriton(lambda t: (0, 0.0, t / 15 + 1))
    with pytest.raises(CapacityAlertError) as info:
        script.watch(workspace)
    assert script.t == 300.0 and info.value.details["queue_delay_ms"] is None
    assert "no request finished in the last interval" in info.value.message
    assert info.value.details["pending"] == 20


def test_idle_server_does_not_alert(workspace):
    script = ScriptedTriton(lambda t: (0, 0.0, 0))
    assert script.watch(workspace) == {"m": None} and script.t == 900.0


class _Hook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(module_workspace, start_triton):
    write_test_repository(module_workspace.models_dir, slow_delay_s=0.3)
    return start_triton(module_workspace, triton_options(module_workspace.models_dir))


def test_alert_fires_on_forced_queue_delay(module_workspace, server):
    hook = HTTPServer(("127.0.0.1", free_port()), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    client = TritonTextClient.for_server(server, "http")
    stop = threading.Event()

    def load():  # 4 concurrent clients on a 1-instance model that takes 0.3 s a request
        while not stop.is_set():
            client.generate("slow", "x", 1)

    workers = [threading.Thread(target=load, daemon=True) for _ in range(4)]
    for w in workers:
        w.start()
    try:  # through the CLI: the server comes from state/serve.json of the module's workspace
        result = CliRunner().invoke(
            app,
            [
                "--root",
                str(module_workspace.root),
                "--run-id",
                "run-capacity",
                "watch",
                "--threshold-ms",
                "100",
                "--window-s",
                "1.5",
                "--interval-s",
                "0.25",
                "--duration-s",
                "15",
                "--model",
                "slow",
                "--webhook",
                f"http://127.0.0.1:{hook.server_port}/alert",
            ],
        )
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=10)
        hook.shutdown()
    assert result.exit_code == ExitCode.CAPACITY_ALERT == 11, result.output
    assert "queue delay of model slow stayed above 100.0 ms for" in result.output and "scale out" in result.output
    error = json.loads((module_workspace.run_dir("run-capacity") / "error.json").read_text())
    assert error["details"]["queue_delay_ms"] > 100
    assert _Hook.received and _Hook.received[0]["model"] == "slow" and "suggestion" in _Hook.received[0]
    logged = {e["event"]: e for e in read_events(module_workspace.run_dir("run-capacity") / "capacity.jsonl")}
    assert logged["alert"]["window_s"] == 1.5 and logged["webhook"]["delivered"] is True


def test_no_alert_below_threshold(module_workspace, server):
    client = TritonTextClient.for_server(server, "http")
    client.generate("slow", "x", 1)
    events = EventLog(module_workspace, "run-capacity-quiet", "capacity")
    last = watch(
        server.metrics_url,
        events,
        threshold_ms=60_000,
        window_s=0.5,
        interval_s=0.25,
        max_duration_s=1.0,
        models=["slow"],
    )
    assert "slow" in last
    assert read_events(events.path)[-1]["event"] == "watch_end"
