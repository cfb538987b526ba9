"""VLLMStreamingEngine against the stand-in `vllm` package's async engine (tests/unit/fake_engines/vllm/_async.py).

The stand-in follows vLLM 0.25's `AsyncEngineArgs` / `AsyncLLMEngine` interface (DELTA outputs,
`reset_prefix_cache`, `shutdown`, an engine bound to the event loop it was first used on) and
streams tokens at a fixed pace; no llem_ray internals are patched.
"""

from __future__ import annotations

import asyncio
import sys
import threading

import pytest

from llem_ray.backends.protocol import Prompt
from llem_ray.backends.streaming import EngineLoop, streaming_engine_of
from llem_ray.backends.vllm.backend import VLLMBackend
from llem_ray.backends.vllm.serving import VLLMStreamingEngine
from llem_ray.config.experiment import ExperimentConfig
from llem_ray.errors import BackendError
from tests.fakes import FakeBackend


def _config(**overrides) -> ExperimentConfig:
    base = dict(
        backend="vllm",
        model="llem/tiny-llama",
        weights="random",
        dataset="synthetic",
        max_input_tokens=16,
        max_output_tokens=5,
        scenario="serving",
        serving={"concurrency": 2, "duration_s": 1},
    )
    return ExperimentConfig(**{**base, **overrides})


def _events(vllm, kind):
    return [payload for name, payload in vllm.EVENTS if name == kind]


async def _collect(chunks) -> list[int]:
    return [n async for n in chunks]


def _loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "llem-vllm-serving"]


def test_engine_loop_runs_coroutines_in_its_thread_and_closes_once():
    loop = EngineLoop("test-loop")

    async def where() -> str:
        return threading.current_thread().name

    async def fail() -> None:
        raise KeyError("boom")

    assert loop.call(where()) == "test-loop"
    with pytest.raises(KeyError, match="boom"):
        loop.call(fail())
    pending = loop.call(_start_sleeper())
    loop.close()
    loop.close()
    assert pending.cancelled()
    with pytest.raises(RuntimeError, match="closed"):
        loop.call(where())


async def _start_sleeper() -> asyncio.Task:
    return asyncio.ensure_future(asyncio.sleep(3600))


def test_the_vllm_backend_offers_a_streaming_engine_and_others_do_not():
    assert isinstance(streaming_engine_of(VLLMBackend()), VLLMStreamingEngine)
    with pytest.raises(BackendError, match="backend 'fake' has no streaming engine"):
        streaming_engine_of(FakeBackend())


def test_engine_arguments_and_delta_streaming(vllm_stand_in):
    config = _config(vllm={"max_num_seqs": 6, "compilation_config": 3}, passthrough_kwargs={"max_logprobs": 2})
    engine = VLLMStreamingEngine()
    info = engine.load(config, "cpu")
    try:
        (args,) = _events(vllm_stand_in, "async_init")
        assert args["load_format"] == "dummy" and args["dtype"] == "bfloat16" and args["seed"] == 42
        assert args["skip_tokenizer_init"] is True and args["disable_log_stats"] is False
        assert args["max_num_seqs"] == 6 and args["max_logprobs"] == 2
        assert args["compilation_config"] == {"mode": 3}  # a level, as vllm.LLM turns it into a CompilationConfig
        assert info.max_concurrent_requests == 6 and info.prefix_caching is True and info.vocab_size == 4096
        (warm,) = _events(vllm_stand_in, "async_generate")  # one kernel warm-up request at load
        assert warm["params"].max_tokens == 2
        ids = engine.encode([Prompt(token_ids=(5, 6, 7))])
        assert ids == [[5, 6, 7]]
        chunks = engine.call(_collect(engine.stream("r1", ids[0], 5)))
        assert chunks == [1, 1, 1, 1, 1]  # DELTA outputs: one new token each
        params = _events(vllm_stand_in, "async_generate")[-1]["params"]
        assert params.output_kind == vllm_stand_in.sampling_params.RequestOutputKind.DELTA
        assert params.min_tokens == params.max_tokens == 5 and params.temperature == 0.0 and not params.detokenize
    finally:
        engine.unload()
    assert _events(vllm_stand_in, "async_shutdown") == [0]
    assert not _loop_threads()
    engine.unload()  # twice is safe
    with pytest.raises(BackendError, match="not loaded"):
        engine.call(_collect(engine.stream("r2", [1], 1)))


def test_a_request_from_another_event_loop_is_refused_by_the_engine(vllm_stand_in):
    engine = VLLMStreamingEngine()
    engine.load(_config(), "cpu")
    try:
        with pytest.raises(BackendError, match="another event loop"):
            asyncio.run(_collect(engine.stream("elsewhere", [1, 2], 3)))
    finally:
        engine.unload()


def test_text_prompts_use_the_engine_tokenizer_truncated(vllm_stand_in, tmp_path):
    data = tmp_path / "p.jsonl"
    data.write_text('{"prompt": "hello there"}\n')
    engine = VLLMStreamingEngine()
    engine.load(_config(dataset=str(data), max_input_tokens=4), "cpu")
    try:
        assert engine.encode([Prompt(text="hello there")]) == [[ord(c) % 200 + 3 for c in "hell"]]
    finally:
        engine.unload()


def test_failures_are_backend_errors(vllm_stand_in):
    from vllm import _async

    engine = VLLMStreamingEngine()
    engine.load(_config(), "cpu")
    try:
        _async.FAIL_REQUEST_IDS.add("bad")
        with pytest.raises(BackendError, match="vLLM request bad failed: ValueError: stand-in failure of bad"):
            engine.call(_collect(engine.stream("bad", [1], 4)))
        vllm_stand_in.REFUSE_RESET = True
        with pytest.raises(BackendError, match="refused to clear its prefix cache"):
            engine.call(engine.clear_cache())
        vllm_stand_in.REFUSE_RESET = False
        engine.call(engine.clear_cache())
        assert _events(vllm_stand_in, "async_reset_prefix_cache") == [0, 0]
    finally:
        engine.unload()
    with pytest.raises(BackendError, match="lora.merge is not supported"):
        VLLMStreamingEngine().load(_config(lora={"adapter": "a", "merge": True}), "cpu")


def test_an_engine_that_cannot_start_leaves_no_loop_behind(vllm_stand_in):
    engine = VLLMStreamingEngine()
    with pytest.raises(BackendError, match="vLLM could not start serving .*unexpected keyword argument 'nope'"):
        engine.load(_config(passthrough_kwargs={"nope": 1}), "cpu")
    assert not _loop_threads()


def test_without_vllm_installed_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(BackendError, match=r"vLLM is not installed.*llem-ray\[vllm\]"):
        VLLMStreamingEngine().load(_config(), "cpu")
