"""Small Python-backend models for the part-2 tests, written into a Triton model repository.

They follow the text contract of the served LLM (`text_input` BYTES, `max_tokens` INT32 ->
`text_output` BYTES) so the real client code talks to them:

* `echo` (decoupled): streams back the last `max_tokens` words of its prompt, one response per word:
  a reply therefore shows exactly which context the client sent.
* `slow`: answers "ok" after sleeping `delay_s` (config parameter, seconds), one instance, so
  concurrent requests queue up (the capacity watcher's forced queue delay).
* `canary` versions 1, 2 (healthy, reply "v<N> ok") and 3 (broken: empty reply).
* `FAILS_TO_LOAD`: a model.py whose `initialize` raises, for `add_version` (a version Triton cannot load).
* `write_port_squatter`: a model that keeps one of the server's ports bound after the server stopped.

Every version directory holds a copy of its model's config.pbtxt, as `llm-demo repo validate` requires.
"""

from __future__ import annotations

from pathlib import Path

_IO = """
input [
  { name: "text_input", data_type: TYPE_STRING, dims: [ 1 ] },
  { name: "max_tokens", data_type: TYPE_INT32, dims: [ 1 ] }
]
output [ { name: "text_output", data_type: TYPE_STRING, dims: [ 1 ] } ]
instance_group [ { kind: KIND_CPU, count: 1 } ]
"""

_HEADER = """
import time
import numpy as np
import triton_python_backend_utils as pb_utils


def _inputs(request):
    text = pb_utils.get_input_tensor_by_name(request, "text_input").as_numpy().reshape(-1)[0].decode()
    limit = int(pb_utils.get_input_tensor_by_name(request, "max_tokens").as_numpy().reshape(-1)[0])
    return text, limit


def _response(text):
    out = pb_utils.Tensor("text_output", np.array([text.encode()], dtype=object))
    return pb_utils.InferenceResponse(output_tensors=[out])
"""

ECHO = (
    _HEADER
    + """

class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            text, limit = _inputs(request)
            for word in text.split()[-limit:]:
                sender.send(_response(word + " "))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
"""
)

SLOW = (
    _HEADER
    + """
import json


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {})
        self.delay_s = float(params.get("delay_s", {}).get("string_value", "0.2"))

    def execute(self, requests):
        responses = []
        for request in requests:
            time.sleep(self.delay_s)
            responses.append(_response("ok"))
        return responses
"""
)

CANARY = (
    _HEADER
    + """


class TritonPythonModel:
    def initialize(self, args):
        self.version = args["model_version"]

    def execute(self, requests):
        return [_response(REPLY.format(version=self.version)) for _ in requests]
"""
)


FAILS_TO_LOAD = (
    _HEADER
    + """

class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("this version cannot load")

    def execute(self, requests):
        return []
"""
)


def add_version(root: Path, name: str, version: int, source: str) -> Path:
    """Write one more version of model `name` (its model.py and the config snapshot the repository
    validator asks for); return its directory."""
    vdir = root / name / str(version)
    vdir.mkdir(parents=True, exist_ok=True)
    (vdir / "model.py").write_text(source)
    (vdir / "config.pbtxt").write_text((root / name / "config.pbtxt").read_text())
    return vdir


def _model(root: Path, name: str, versions: dict[int, str], extra_config: str = "") -> None:
    (root / name).mkdir(parents=True, exist_ok=True)
    config = f'name: "{name}"\nbackend: "python"\nmax_batch_size: 0\n{extra_config}{_IO}'
    (root / name / "config.pbtxt").write_text(config)
    for version, source in versions.items():
        add_version(root, name, version, source)


def write_test_repository(root: Path, slow_delay_s: float = 0.2) -> Path:
    """Write the models above into `root` (created) and return it."""
    root.mkdir(parents=True, exist_ok=True)
    _model(root, "echo", {1: ECHO}, "model_transaction_policy { decoupled: true }\n")
    _model(root, "slow", {1: SLOW}, f'parameters {{ key: "delay_s" value: {{ string_value: "{slow_delay_s}" }} }}\n')
    healthy = 'REPLY = "v{version} ok"\n' + CANARY
    broken = 'REPLY = ""\n' + CANARY
    _model(root, "canary", {1: healthy, 2: healthy, 3: broken})
    return root


PORT_SQUATTER = (
    _HEADER
    + '''
import json
import os
import shutil
import subprocess

# Waits until the stub that started it is gone (the server is being stopped), then takes the
# port as soon as the server lets it go, holds it for hold_s seconds and exits.
HOLD = """
import os, socket, sys, time
port, hold_s, pidfile, parent = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], os.getppid()
with open(pidfile, "w") as fh:
    fh.write(str(os.getpid()))
deadline = time.monotonic() + 600
while os.getppid() == parent and time.monotonic() < deadline:
    time.sleep(0.02)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        time.sleep(0.001)
        continue
    sock.listen()
    time.sleep(hold_s)
    break
"""


class TritonPythonModel:
    def initialize(self, args):
        params = {k: v["string_value"] for k, v in json.loads(args["model_config"])["parameters"].items()}
        subprocess.Popen([shutil.which("python3"), "-c", HOLD, params["port"], params["hold_s"], params["pidfile"]],
                         start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)

    def execute(self, requests):
        return [_response("") for _ in requests]
'''
)


def write_port_squatter(root: Path, port: int, hold_s: float, pidfile: Path) -> None:
    """Model `squatter`: once the server that loaded it is stopped, a process outside the server's
    process group binds 127.0.0.1:`port` for `hold_s` seconds (a teardown that must find the port still
    bound), then exits by itself; its pid goes to `pidfile`."""
    params = "".join(
        f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}\n'
        for k, v in (("port", port), ("hold_s", hold_s), ("pidfile", pidfile))
    )
    _model(root, "squatter", {1: PORT_SQUATTER}, params)
