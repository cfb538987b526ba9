"""The python-runtime Triton model (templates/python_llm/model.py), in-process with a stand-in for
Triton's ``triton_python_backend_utils``; plus one run inside the real tritonserver."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import types
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest_triton import free_port

from llm_demo import repository
from llm_demo.config import load_config
from llm_demo.paths import Workspace

FINAL = 1


class _Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self.name, self._array = name, array

    def as_numpy(self) -> np.ndarray:
        return self._array


class _Response:
    def __init__(self, output_tensors=(), error=None) -> None:
        self.outputs = {t.name: t.as_numpy() for t in output_tensors}
        self.error = error

    @property
    def text(self) -> str:
        return self.outputs["text_output"].reshape(-1)[0].decode()


class _Error:
    def __init__(self, message: str) -> None:
        self.message = message


class _Sender:
    def __init__(self) -> None:
        self.sent: list[tuple[_Response, int]] = []

    def send(self, response: _Response, flags: int = 0) -> None:
        self.sent.append((response, flags))


class _Request:
    def __init__(self, **inputs: object) -> None:
        self.inputs = {}
        for name, value in inputs.items():
            if isinstance(value, str):
                arr = np.array([[value.encode()]], dtype=object)
            elif isinstance(value, bool):
                arr = np.array([[value]], dtype=bool)
            elif isinstance(value, float):
                arr = np.array([[value]], dtype=np.float32)
            else:
                arr = np.array([[value]], dtype=np.int32)
            self.inputs[name] = _Tensor(name, arr)
        self.sender = _Sender()

    def get_response_sender(self) -> _Sender:
        return self.sender


def _fake_pb_utils() -> types.ModuleType:
    mod = types.ModuleType("triton_python_backend_utils")
    mod.Tensor = _Tensor
    mod.InferenceResponse = _Response
    mod.TritonError = _Error
    mod.TritonModelException = RuntimeError
    mod.TRITONSERVER_RESPONSE_COMPLETE_FINAL = FINAL
    mod.get_input_tensor_by_name = lambda request, name: request.inputs.get(name)
    mod.using_decoupled_model_transaction_policy = lambda cfg: cfg.get("model_transaction_policy", {}).get(
        "decoupled", False
    )
    mod.Logger = types.SimpleNamespace(log_info=lambda msg: None, log_warn=lambda msg: None)
    return mod


def _load_model(tiny_model_dir: Path, decoupled: bool, max_input_len: int = 64):
    spec = importlib.util.spec_from_file_location(
        "llm_demo_python_llm_model", repository.TEMPLATE_DIR / "python_llm" / "model.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["triton_python_backend_utils"] = _fake_pb_utils()
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["triton_python_backend_utils"]
    params = {"model_dir": "hf_model", "dtype": "float16", "max_input_len": str(max_input_len), "max_seq_len": "128"}
    config = {
        "parameters": {k: {"string_value": v} for k, v in params.items()},
        "model_transaction_policy": {"decoupled": decoupled},
    }
    version_dir = tiny_model_dir.parent / "repo" / "m" / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    if not (version_dir / "hf_model").exists():
        (version_dir / "hf_model").symlink_to(tiny_model_dir)
    model = module.TritonPythonModel()
    model.initialize(
        {"model_config": json.dumps(config), "model_repository": str(version_dir.parent), "model_version": "1"}
    )
    return model


@pytest.fixture(scope="module")
def decoupled_model(tiny_model_dir: Path):
    return _load_model(tiny_model_dir, decoupled=True)


def _reference(tiny_model_dir: Path, prompt: str, n: int) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    lm = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = tok(prompt, return_tensors="pt").input_ids
    out = lm.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)[0][ids.shape[1] :].tolist()
    if tok.eos_token_id in out:
        out = out[: out.index(tok.eos_token_id)]
    return tok.decode(out, skip_special_tokens=True)


def test_greedy_output_matches_transformers_generate(decoupled_model, tiny_model_dir: Path) -> None:
    request = _Request(text_input="hello world", max_tokens=10)
    assert decoupled_model.execute([request]) is None
    [(response, flags)] = request.sender.sent
    assert flags == FINAL and response.error is None
    assert response.text == _reference(tiny_model_dir, "hello world", 10)
    again = _Request(text_input="hello world", max_tokens=10)
    decoupled_model.execute([again])
    assert again.sender.sent[0][0].text == response.text


def test_stream_sends_deltas_then_final(decoupled_model) -> None:
    full = _Request(text_input="the quick brown fox", max_tokens=8)
    decoupled_model.execute([full])
    streamed = _Request(text_input="the quick brown fox", max_tokens=8, stream=True)
    decoupled_model.execute([streamed])
    sent = streamed.sender.sent
    assert len(sent) >= 2 and all(flags == 0 for _, flags in sent[:-1]) and sent[-1][1] == FINAL
    assert "".join(r.text for r, _ in sent) == full.sender.sent[0][0].text


def test_stop_words_cut_the_output(decoupled_model) -> None:
    base = _Request(text_input="hello world", max_tokens=10)
    decoupled_model.execute([base])
    text = base.sender.sent[0][0].text
    assert len(text) >= 3
    stop = text[2:4] if len(text) >= 4 else text[2:]
    cut = _Request(text_input="hello world", max_tokens=10, stop_words=stop)
    decoupled_model.execute([cut])
    assert cut.sender.sent[0][0].text == text[: text.index(stop)]


def test_sampling_is_seeded(decoupled_model) -> None:
    texts = []
    for seed in (7, 7):
        r = _Request(text_input="hello", max_tokens=12, temperature=1.5, top_k=50, top_p=0.95, random_seed=seed)
        decoupled_model.execute([r])
        texts.append(r.sender.sent[0][0].text)
    assert texts[0] == texts[1]


def test_bad_requests_become_error_responses(decoupled_model) -> None:
    too_long = _Request(text_input="word " * 200, max_tokens=4)
    zero = _Request(text_input="hi", max_tokens=0)
    decoupled_model.execute([too_long, zero])
    assert "max_input_len" in too_long.sender.sent[0][0].error.message
    assert "max_tokens" in zero.sender.sent[0][0].error.message


def test_non_decoupled_returns_responses_and_refuses_stream(tiny_model_dir: Path) -> None:
    model = _load_model(tiny_model_dir, decoupled=False)
    ok, streamed = (
        _Request(text_input="hello world", max_tokens=5),
        _Request(text_input="hi", max_tokens=5, stream=True),
    )
    responses = model.execute([ok, streamed])
    assert len(responses) == 2 and ok.sender.sent == []
    assert responses[0].error is None and responses[0].text == _reference(tiny_model_dir, "hello world", 5)
    assert "decoupled" in responses[1].error.message
    model.finalize()
    assert model.model is None


def _broken_numpy2_packages(folder: Path) -> Path:
    """SciPy and scikit-learn packages that fail to import as ones built for NumPy 2 do under the
    NumPy 1.26 the Triton 2.51 stub needs (seen on an H100 host with transformers 5.17: top-level
    ``scipy`` imports, ``scipy.optimize`` raises from ``scipy.sparse``)."""
    error = "raise AttributeError(\"module 'numpy' has no attribute 'long'\")\n"
    (folder / "scipy" / "optimize").mkdir(parents=True)
    (folder / "scipy" / "__init__.py").write_text("", encoding="utf-8")
    (folder / "scipy" / "optimize" / "__init__.py").write_text(error, encoding="utf-8")
    (folder / "sklearn").mkdir()
    (folder / "sklearn" / "__init__.py").write_text(error, encoding="utf-8")
    return folder


def test_unusable_scipy_and_sklearn_are_hidden_from_transformers(tmp_path: Path) -> None:
    """In a fresh interpreter with a broken SciPy and scikit-learn first on sys.path, the model's
    guard reports each import error once, transformers then sees neither and its Llama class loads."""
    script = f"""
import importlib.util, sys, types
sys.modules["triton_python_backend_utils"] = types.ModuleType("triton_python_backend_utils")
spec = importlib.util.spec_from_file_location("m", {str(repository.TEMPLATE_DIR / "python_llm" / "model.py")!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
first, second = module._hide_unusable_packages(), module._hide_unusable_packages()
from transformers import LlamaForCausalLM
from transformers.utils import is_scipy_available, is_sklearn_available
print(sorted((k, repr(v)) for k, v in first.items()), second, is_scipy_available(), is_sklearn_available(),
      LlamaForCausalLM.__name__)
"""
    env = {**os.environ, "PYTHONPATH": str(_broken_numpy2_packages(tmp_path / "stub-site"))}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    error = "AttributeError(\"module 'numpy' has no attribute 'long'\")"
    expected = [("scipy", error), ("sklearn", error)]
    assert done.stdout.split("\n")[-2] == f"{expected} {{}} False False LlamaForCausalLM"


def test_served_by_real_tritonserver(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Greedy and streamed generation through the real server, its stub running in the venv of
    `prepare_stub_python` (how NumPy 1.x reaches the stub alone on a NumPy 2 host): the stub-only
    folder comes first there (its broken SciPy and scikit-learn are imported, then hidden by the model) and
    this interpreter's packages after it, and serving still works."""
    from llm_demo import triton

    ws = Workspace(tmp_path / "ws")
    cfg = load_config(None, {"model.local_dir": str(tiny_model_dir), "model.name": "tiny", "build.max_batch_size": 4})
    repo = repository.generate(ws, cfg)
    install = triton.locate_triton()
    backends = triton.prepare_backend_dir(install, tmp_path / "backends")
    http_port = free_port()
    opts = triton.ServeOptions(
        model_repository=repo, http_port=http_port, grpc_port=free_port(), metrics_port=free_port()
    )
    stub_bin = triton.prepare_stub_python(_broken_numpy2_packages(tmp_path / "stub-site"), tmp_path / "stub-python")
    env = repository.python_stub_env(triton.server_env(install, stub_bin=stub_bin))
    log = tmp_path / "triton.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            triton.server_command(install, backends, opts), env=env, stdout=fh, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{http_port}/v2/models/tiny"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                urllib.request.urlopen(f"{base}/ready", timeout=1)
                break
            except OSError:
                time.sleep(0.3)
        else:
            pytest.fail(f"tritonserver not ready:\n{log.read_text()[-3000:]}")

        def post(path: str, body: dict) -> bytes:
            req = urllib.request.Request(f"{base}/{path}", data=json.dumps(body).encode(), method="POST")
            return urllib.request.urlopen(req, timeout=60).read()

        answer = json.loads(post("generate", {"text_input": "hello world", "max_tokens": 6}))
        assert answer["text_output"] == _reference(tiny_model_dir, "hello world", 6)
        events = [
            json.loads(line[5:])
            for line in post("generate_stream", {"text_input": "hello world", "max_tokens": 6, "stream": True})
            .decode()
            .splitlines()
            if line.startswith("data:")
        ]
        assert "".join(e["text_output"] for e in events) == answer["text_output"] and len(events) >= 2
        assert "scipy hidden from transformers (AttributeError(" in log.read_text()
        assert "sklearn hidden from transformers (AttributeError(" in log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
