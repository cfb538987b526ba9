"""Capacity watcher: Prometheus parsing, window arithmetic, and a real forced queue delay."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from conftest_triton import free_port, triton_options
from triton_models import write_test_repository
from typer.testing import CliRunner

from llm_demo.capacity import ModelSample, QueueDelayWindow, parse_metrics, per_model, watch
from llm_demo.client import TritonTextClient
from llm_demo.cli import app
from llm_demo.errors import ExitCode
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


def test_window_needs_full_span_and_averages_per_request():
    window = QueueDelayWindow(window_s=10)
    window.add(ModelSample(0, 0, 0, 0, 0))
    window.add(ModelSample(5, 50_000, 10, 0, 0))
    assert not window.full() and window.delay_ms() == pytest.approx(5.0)
    window.add(ModelSample(10, 200_000, 20, 0, 0))
    assert window.full() and window.delay_ms() == pytest.approx(10.0)  # 200 ms over 20 requests
    window.add(ModelSample(16, 200_000, 20, 0, 0))
    assert window.samples[0].t == 5 and window.delay_ms() == pytest.approx(15.0)  # baseline slid
    window.add(ModelSample(30, 200_000, 20, 0, 0))
    assert window.delay_ms() is None  # no finished request in the window: not judged


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
        result = CliRunner().invoke(app, [
            "--root", str(module_workspace.root), "--run-id", "run-capacity", "watch", "--threshold-ms", "100",
            "--window-s", "1.5", "--interval-s", "0.25", "--duration-s", "15", "--model", "slow",
            "--webhook", f"http://127.0.0.1:{hook.server_port}/alert"])
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=10)
        hook.shutdown()
    assert result.exit_code == ExitCode.CAPACITY_ALERT == 11, result.output
    assert "queue delay of model slow averaged" in result.output and "scale out" in result.output
    error = json.loads((module_workspace.run_dir("run-capacity") / "error.json").read_text())
    assert error["details"]["queue_delay_ms"] > 100
    assert _Hook.received and _Hook.received[0]["model"] == "slow" and "suggestion" in _Hook.received[0]
    logged = {e["event"]: e for e in read_events(module_workspace.run_dir("run-capacity") / "capacity.jsonl")}
    assert logged["alert"]["window_s"] == 1.5 and logged["webhook"]["delivered"] is True


def test_no_alert_below_threshold(module_workspace, server):
    client = TritonTextClient.for_server(server, "http")
    client.generate("slow", "x", 1)
    events = EventLog(module_workspace, "run-capacity-quiet", "capacity")
    last = watch(server.metrics_url, events, threshold_ms=60_000, window_s=0.5, interval_s=0.25,
                 max_duration_s=1.0, models=["slow"])
    assert "slow" in last
    assert read_events(events.path)[-1]["event"] == "watch_end"
