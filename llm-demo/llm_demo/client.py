"""Text generation against Triton over HTTP or gRPC, streaming when the model is decoupled.

The model contract is the one of the tensorrtllm_backend ensemble and of the
`python` runtime: input `text_input` (BYTES), `max_tokens` (INT32), output
`text_output` (BYTES). A decoupled model streams one response per chunk; the
chunks are concatenated.

* HTTP uses Triton's generate extension with the standard library:
  `POST /v2/models/<m>[/versions/<v>]/generate` and, streaming,
  `generate_stream` (server-sent events). No gevent stack is needed.
* gRPC uses `tritonclient.grpc`: `infer`, or `start_stream` /
  `async_stream_infer` until `triton_final_response`.

`Generation.ttft_s` is the time to the first non-empty chunk (equal to the
latency when not streaming); times are wall-clock seconds. Failure mode: any
transport or server error raises `InferenceFailed` with the server's message.
"""

from __future__ import annotations

import json
import queue
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import numpy as np


class InferenceFailed(RuntimeError):
    """A request could not be completed (connection, HTTP/gRPC error, timeout)."""


@dataclass
class Generation:
    """One completed request. Times in seconds; `chunks` = non-empty text responses
    (with a streaming TRT-LLM or python-runtime model, one per generated token)."""

    text: str
    ttft_s: float
    latency_s: float
    chunks: int
    streamed: bool


def _model_path(model: str, version: str | int | None) -> str:
    return f"/v2/models/{model}" + (f"/versions/{version}" if version not in (None, "") else "")


class TritonTextClient:
    """Generate text from one Triton server.

    Args:
        http_url / grpc_url: ``host:port`` (no scheme), as in `ServerHandle`.
        transport: ``"http"`` or ``"grpc"``.
        tls_root_cert: PEM file to verify the gRPC server with (gRPC TLS).
        timeout_s: per-request limit in seconds.
    """

    def __init__(
        self,
        http_url: str,
        grpc_url: str | None = None,
        transport: str = "http",
        tls_root_cert: str | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        if transport not in ("http", "grpc"):
            raise ValueError(f"transport must be http or grpc, not {transport!r}")
        self.http_url = http_url
        self.grpc_url = grpc_url
        self.transport = transport
        self.tls_root_cert = tls_root_cert
        self.timeout_s = timeout_s
        self._configs: dict[str, dict] = {}

    @classmethod
    def for_server(cls, handle, transport: str = "http", timeout_s: float = 60.0) -> TritonTextClient:
        """Client for a `serve.ServerHandle`."""
        return cls(handle.http_url, handle.grpc_url, transport, handle.tls_root_cert, timeout_s)

    def _get_json(self, path: str) -> dict:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}{path}", timeout=self.timeout_s) as resp:
                return json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise InferenceFailed(f"GET {path}: {_http_error_text(exc)}") from exc

    def model_config(self, model: str) -> dict:
        """The served model's config (JSON form of config.pbtxt), cached per model."""
        if model not in self._configs:
            self._configs[model] = self._get_json(f"/v2/models/{model}/config")
        return self._configs[model]

    def forget_config(self, model: str) -> None:
        """Drop the cached config of `model` (after it was reloaded with another config)."""
        self._configs.pop(model, None)

    def is_decoupled(self, model: str) -> bool:
        return bool(self.model_config(model).get("model_transaction_policy", {}).get("decoupled"))

    def takes_stream_flag(self, model: str) -> bool:
        """True when the model has a `stream` input (ensemble, python runtime) that must be set to stream."""
        return any(i.get("name") == "stream" for i in self.model_config(model).get("input", []))

    def generate(
        self, model: str, prompt: str, max_tokens: int, version: str | int | None = None, stream: bool | None = None
    ) -> Generation:
        """Run one request; `stream=None` streams exactly when the model is decoupled."""
        stream = self.is_decoupled(model) if stream is None else stream
        if self.transport == "http":
            return self._http(model, prompt, max_tokens, version, stream)
        return self._grpc(model, prompt, max_tokens, version, stream)

    # -- HTTP ---------------------------------------------------------------------------------
    def _http(self, model, prompt, max_tokens, version, stream) -> Generation:
        endpoint = "generate_stream" if stream else "generate"
        payload: dict = {"text_input": prompt, "max_tokens": int(max_tokens)}
        if stream and self.takes_stream_flag(model):
            payload["stream"] = True
        body = json.dumps(payload).encode()
        req = urllib.request.Request(
            f"http://{self.http_url}{_model_path(model, version)}/{endpoint}",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        t0 = time.perf_counter()
        ttft = None
        parts: list[str] = []
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                if not stream:
                    parts.append(_text_of(json.loads(resp.read())))
                else:
                    for raw in resp:
                        line = raw.decode("utf-8").strip()
                        if not line.startswith("data:"):
                            continue
                        event = json.loads(line[5:])
                        if "error" in event:
                            raise InferenceFailed(f"{model}: {event['error']}")
                        piece = _text_of(event)
                        if piece and ttft is None:
                            ttft = time.perf_counter() - t0
                        parts.append(piece)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise InferenceFailed(f"{model}: {_http_error_text(exc)}") from exc
        latency = time.perf_counter() - t0
        chunks = sum(1 for p in parts if p)
        return Generation("".join(parts), ttft if ttft is not None else latency, latency, chunks, stream)

    # -- gRPC ---------------------------------------------------------------------------------
    def _grpc_inputs(self, model: str, prompt: str, max_tokens: int, stream: bool):
        import tritonclient.grpc as grpcclient

        batched = int(self.model_config(model).get("max_batch_size", 0)) > 0
        shape = [1, 1] if batched else [1]
        text = grpcclient.InferInput("text_input", shape, "BYTES")
        text.set_data_from_numpy(np.array([prompt.encode()], dtype=object).reshape(shape))
        limit = grpcclient.InferInput("max_tokens", shape, "INT32")
        limit.set_data_from_numpy(np.array([max_tokens], dtype=np.int32).reshape(shape))
        inputs = [text, limit]
        if stream and self.takes_stream_flag(model):
            flag = grpcclient.InferInput("stream", shape, "BOOL")
            flag.set_data_from_numpy(np.array([True], dtype=bool).reshape(shape))
            inputs.append(flag)
        return inputs

    def _grpc_client(self):
        import tritonclient.grpc as grpcclient

        if self.grpc_url is None:
            raise InferenceFailed("no gRPC endpoint configured")
        if self.tls_root_cert:
            return grpcclient.InferenceServerClient(self.grpc_url, ssl=True, root_certificates=self.tls_root_cert)
        return grpcclient.InferenceServerClient(self.grpc_url)

    def _grpc(self, model, prompt, max_tokens, version, stream) -> Generation:
        from tritonclient.utils import InferenceServerException

        inputs = self._grpc_inputs(model, prompt, max_tokens, stream)
        client = self._grpc_client()
        version = "" if version is None else str(version)
        t0 = time.perf_counter()
        try:
            if not stream and not self.is_decoupled(model):
                result = client.infer(model, inputs, model_version=version, client_timeout=self.timeout_s)
                text = _decode(result.as_numpy("text_output"))
                latency = time.perf_counter() - t0
                return Generation(text, latency, latency, 1, False)
            return self._grpc_stream(client, model, inputs, version, t0, stream)
        except InferenceServerException as exc:
            raise InferenceFailed(f"{model}: {exc.message()}") from exc
        finally:
            client.close()

    def _grpc_stream(self, client, model, inputs, version, t0, stream: bool) -> Generation:
        """Decoupled models answer only on a gRPC stream, token deltas or not (`stream`)."""
        responses: queue.Queue = queue.Queue()
        client.start_stream(callback=lambda result, error: responses.put((result, error)))
        parts: list[str] = []
        ttft = None
        try:
            client.async_stream_infer(model, inputs, model_version=version, enable_empty_final_response=True)
            while True:
                try:
                    result, error = responses.get(timeout=self.timeout_s)
                except queue.Empty:
                    raise InferenceFailed(f"{model}: no stream response within {self.timeout_s} s") from None
                if error is not None:
                    raise InferenceFailed(f"{model}: {error}")
                out = result.as_numpy("text_output")
                if out is not None:
                    piece = _decode(out)
                    if piece and ttft is None:
                        ttft = time.perf_counter() - t0
                    parts.append(piece)
                params = result.get_response().parameters
                if "triton_final_response" in params and params["triton_final_response"].bool_param:
                    break
        finally:
            client.stop_stream()
        latency = time.perf_counter() - t0
        chunks = sum(1 for p in parts if p)
        return Generation("".join(parts), ttft if ttft is not None else latency, latency, chunks, stream)


def _decode(arr) -> str:
    value = arr.reshape(-1)[0]
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _text_of(payload: dict) -> str:
    value = payload.get("text_output", "")
    if isinstance(value, list):
        value = value[0] if value else ""
    return str(value)


def _http_error_text(exc: Exception) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        try:
            return f"HTTP {exc.code}: {json.loads(exc.read()).get('error', '')}"
        except (ValueError, OSError):
            return f"HTTP {exc.code}"
    return str(exc)
