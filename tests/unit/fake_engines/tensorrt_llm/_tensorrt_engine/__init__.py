"""Stand-in for `tensorrt_llm._tensorrt_engine`: the LLM on a built TensorRT engine, with `save`."""

from __future__ import annotations

from pathlib import Path

from tensorrt_llm import EVENTS, llmapi
from tensorrt_llm import LLM as _TorchLLM


class LLM(_TorchLLM):
    ARGS = llmapi.TrtLlmArgs

    def save(self, engine_dir: str) -> None:
        path = Path(engine_dir)
        path.mkdir(parents=True, exist_ok=True)
        (path / "rank0.engine").write_bytes(b"fake engine")
        EVENTS.append(("save", engine_dir))
