"""TensorRTBackend against a stand-in `tensorrt_llm` package (tests/unit/fake_engines/tensorrt_llm) on sys.path.

The stand-in follows TRT-LLM's documented LLM API (argument models that reject unknown names,
SamplingParams, RequestOutput with request_perf_metrics.timing_metrics, shutdown, engine `save`).
The engine cache is exercised with a real `EngineCache` in a temporary directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from llem_ray.backends import registry
from llem_ray.backends.engine_common import ModelSource
from llem_ray.backends.protocol import Prompt
from llem_ray.backends.tensorrt.backend import TensorRTBackend, llm_kwargs, load_engine_llm, sampling_kwargs
from llem_ray.backends.tensorrt.engine_cache import MANIFEST, EngineCache, engine_key, model_identity
from llem_ray.config.experiment import ExperimentConfig
from llem_ray.errors import BackendError

FAKES = Path(__file__).parent / "fake_engines"


def _drop(prefix: str) -> None:
    for name in [n for n in sys.modules if n == prefix or n.startswith(prefix + ".")]:
        del sys.modules[name]


@pytest.fixture
def trtllm(monkeypatch):
    _drop("tensorrt_llm")
    monkeypatch.syspath_prepend(str(FAKES))
    import tensorrt_llm

    tensorrt_llm.EVENTS.clear()
    yield tensorrt_llm
    _drop("tensorrt_llm")


def _config(**overrides) -> ExperimentConfig:
    base = dict(
        backend="tensorrt",
        model="llem/tiny-llama",
        weights="random",
        dataset="synthetic",
        n=4,
        max_input_tokens=16,
        max_output_tokens=8,
    )
    return ExperimentConfig(**{**base, **overrides})


def _events(trtllm, kind):
    return [payload for name, payload in trtllm.EVENTS if name == kind]


def test_registry_builds_the_tensorrt_backend():
    assert isinstance(registry.create("tensorrt"), TensorRTBackend)


def test_pytorch_runtime_arguments(trtllm):
    config = _config(
        resources={"gpus": 2},
        tensorrt={
            "max_batch_size": 16,
            "kv_cache_free_gpu_memory_fraction": 0.7,
            "kv_cache_dtype": "fp8",
            "kv_cache_enable_block_reuse": False,
            "quantization": "fp8",
            "cuda_graph_batch_sizes": [1, 8],
            "cuda_graph_padding": True,
            "scheduler_policy": "max_utilization",
            "torch_compile": True,
            "attn_backend": "FLASHINFER",
        },
        passthrough_kwargs={"max_batch_size": 12, "stream_interval": 4},
    )
    backend = TensorRTBackend()
    info = backend.load(config, "cuda")
    (kwargs,) = _events(trtllm, "init:LLM")
    assert kwargs["tensor_parallel_size"] == 2 and kwargs["dtype"] == "bfloat16"
    assert kwargs["load_format"] == "dummy" and kwargs["skip_tokenizer_init"] is True and "backend" not in kwargs
    kv = kwargs["kv_cache_config"]
    assert (kv.free_gpu_memory_fraction, kv.dtype, kv.enable_block_reuse) == (0.7, "fp8", False)
    assert kwargs["quant_config"].quant_algo is trtllm.llmapi.QuantAlgo.FP8
    assert kwargs["cuda_graph_config"].batch_sizes == [1, 8] and kwargs["cuda_graph_config"].enable_padding
    assert kwargs["scheduler_config"].capacity_scheduler_policy.name == "MAX_UTILIZATION"
    assert isinstance(kwargs["torch_compile_config"], trtllm.llmapi.TorchCompileConfig)
    assert kwargs["attn_backend"] == "FLASHINFER"
    assert kwargs["max_batch_size"] == 12 and kwargs["stream_interval"] == 4  # passthrough wins, untouched
    (warmup,) = _events(trtllm, "generate")
    assert len(warmup["inputs"]) == 1 and warmup["params"].max_tokens == 2
    assert info.vocab_size == 4096 and info.dtype == "bfloat16"
    backend.unload()
    backend.unload()
    assert _events(trtllm, "shutdown") == ["LLM"]
    with pytest.raises(BackendError, match="no engine loaded"):
        backend.generate([Prompt(token_ids=(1,))], 2)


def test_cuda_graphs_off_and_pre_1_0_needs_the_pytorch_backend_flag(trtllm):
    source = ModelSource("m", needs_tokenizer=False)
    kwargs = llm_kwargs(_config(tensorrt={"cuda_graphs": False}), source, trtllm.llmapi, "0.21.0")
    assert kwargs["cuda_graph_config"] is None and kwargs["backend"] == "pytorch"


def test_generate_greedy_fixed_length_with_perf_metrics(trtllm):
    backend = TensorRTBackend()
    backend.load(_config(), "cuda")
    out = backend.generate([Prompt(token_ids=(5, 6, 7)), Prompt(token_ids=(8,))], 6)
    params = _events(trtllm, "generate")[-1]["params"]
    assert (params.min_tokens, params.max_tokens, params.top_k, params.return_perf_metrics) == (6, 6, 1, True)
    assert (params.end_id, params.pad_id, params.detokenize) == (2, 0, False)  # from the tiny-llama config
    assert out.input_tokens == 4 and out.output_tokens == 12
    first = out.requests[0]
    assert first.ttft_s == pytest.approx(trtllm.FIRST_TOKEN_S)
    assert first.latency_s == pytest.approx(trtllm.FIRST_TOKEN_S + 5 * trtllm.TOKEN_INTERVAL_S)
    assert first.itl_s == pytest.approx([trtllm.TOKEN_INTERVAL_S] * 5)


def test_beam_search_and_sampling_parameters(trtllm):
    source = ModelSource("m", needs_tokenizer=True)
    beams = _config(decoder={"num_beams": 4})
    assert llm_kwargs(beams, source, trtllm.llmapi, "1.1.0")["max_beam_width"] == 4
    params = sampling_kwargs(beams, source, 8)
    assert (params["use_beam_search"], params["best_of"], params["n"]) == (True, 4, 1) and "top_k" not in params
    assert "end_id" not in params  # the engine's tokenizer knows its EOS
    sampled = sampling_kwargs(_config(decoder={"do_sample": True, "temperature": 0.6, "top_p": 0.8}), source, 8)
    assert (sampled["temperature"], sampled["top_p"], "top_k" in sampled) == (0.6, 0.8, False)


def test_prefill_and_text_prompts(trtllm):
    backend = TensorRTBackend()
    backend.load(_config(dataset="aienergyscore"), "cuda")
    assert "skip_tokenizer_init" not in _events(trtllm, "init:LLM")[0]
    out = backend.prefill([Prompt(text="y" * 30)])
    params = _events(trtllm, "generate")[-1]["params"]
    assert params.max_tokens == 1 and params.min_tokens is None
    assert out.input_tokens == 16 and out.output_tokens == 0


def test_without_perf_metrics_latency_is_the_workload_wall_time(trtllm):
    from llem_ray.backends.tensorrt.backend import request_timing

    output = trtllm.RequestOutput(0, [1], [trtllm.CompletionOutput(0, "", [9, 9])])
    timing = request_timing(output, batch_wall_s=1.5)
    assert (timing.latency_s, timing.ttft_s, timing.output_tokens) == (1.5, None, 2)


def test_engine_runtime_is_refused_after_1_2_and_for_random_weights(trtllm, monkeypatch):
    monkeypatch.setattr(trtllm, "__version__", "1.3.0rc1")
    with pytest.raises(BackendError, match=r"<= 1.2.x \(installed: 1.3.0rc1\)"):
        TensorRTBackend().load(_config(weights="pretrained", model="org/m", tensorrt={"runtime": "engine"}), "cuda")
    monkeypatch.setattr(trtllm, "__version__", "1.2.0")
    with pytest.raises(BackendError, match="builds from a checkpoint"):
        TensorRTBackend().load(_config(tensorrt={"runtime": "engine"}), "cuda")


def test_engine_runtime_puts_limits_in_build_config(trtllm):
    config = _config(
        weights="pretrained",
        model="org/m",
        tensorrt={"runtime": "engine", "max_batch_size": 8, "max_input_len": 64, "cuda_graphs": True},
    )
    kwargs = llm_kwargs(config, ModelSource("org/m", needs_tokenizer=False), trtllm.llmapi, "1.2.0")
    assert kwargs["build_config"] == trtllm.llmapi.BuildConfig(max_batch_size=8, max_input_len=64)
    assert "max_batch_size" not in kwargs and "load_format" not in kwargs
    assert kwargs["extended_runtime_perf_knob_config"].cuda_graph_mode is True


def test_engine_cache_builds_once_then_reuses(trtllm, tmp_path):
    from tensorrt_llm._tensorrt_engine import LLM as EngineLLM

    cache = EngineCache(tmp_path / "engines")
    kwargs = {"model": "org/m", "build_config": trtllm.llmapi.BuildConfig(max_batch_size=8)}
    _, notes = load_engine_llm(EngineLLM, kwargs, "k1", cache, {"what": "test"})
    assert "built and cached" in notes[0]
    engine_dir = cache.lookup("k1")
    assert engine_dir is not None and (engine_dir / "rank0.engine").is_file() and (engine_dir / MANIFEST).is_file()
    assert not any(p.name.startswith(".") for p in cache.root.iterdir())  # no temporary directory left
    _, notes = load_engine_llm(EngineLLM, kwargs, "k1", cache, {"what": "test"})
    assert "reused" in notes[0]
    second = _events(trtllm, "init:LLM")[-1]
    assert second["model"] == str(engine_dir) and second["tokenizer"] == "org/m" and "build_config" not in second
    assert len(_events(trtllm, "save")) == 1
    _, notes = load_engine_llm(EngineLLM, kwargs, None, cache, {})
    assert "not cached" in notes[0] and len(_events(trtllm, "save")) == 1


def test_engine_key_covers_model_flags_gpu_and_versions(tmp_path):
    model_dir = tmp_path / "ckpt"
    model_dir.mkdir()
    (model_dir / "model.safetensors").write_bytes(b"1234")
    identity = model_identity(str(model_dir), {"hidden_size": 64})
    base = engine_key(identity, {"max_batch_size": 8}, "sm90", "10.9", "1.2.0")
    assert engine_key(dict(reversed(list(identity.items()))), {"max_batch_size": 8}, "sm90", "10.9", "1.2.0") == base
    variants = [
        engine_key(
            model_identity(str(model_dir), {"hidden_size": 128}), {"max_batch_size": 8}, "sm90", "10.9", "1.2.0"
        ),
        engine_key(identity, {"max_batch_size": 16}, "sm90", "10.9", "1.2.0"),
        engine_key(identity, {"max_batch_size": 8}, "sm80", "10.9", "1.2.0"),
        engine_key(identity, {"max_batch_size": 8}, "sm90", "10.11", "1.2.0"),
        engine_key(identity, {"max_batch_size": 8}, "sm90", "10.9", "1.1.0"),
    ]
    assert len({base, *variants}) == 6
    (model_dir / "model.safetensors").write_bytes(b"123456")  # re-exported weights: new size
    assert (
        engine_key(model_identity(str(model_dir), {"hidden_size": 64}), {"max_batch_size": 8}, "sm90", "10.9", "1.2.0")
        != base
    )


def test_backend_engine_path_without_gpu_builds_without_caching(trtllm, tmp_path):
    trtllm.__version__ = "1.2.0"
    backend = TensorRTBackend(EngineCache(tmp_path / "engines"))
    info = backend.load(_config(weights="pretrained", model="org/m", tensorrt={"runtime": "engine"}), "cuda")
    assert any("not cached (GPU compute capability unknown)" in n for n in info.notes)
    assert _events(trtllm, "init:LLM")[0]["build_config"] is not None
    assert not (tmp_path / "engines").exists()
    backend.unload()


def test_missing_tensorrt_llm_names_extra_and_container(monkeypatch):
    _drop("tensorrt_llm")
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)
    with pytest.raises(BackendError, match=r"llem-ray\[tensorrt\].*tensorrt-llm/release.*runtime_env"):
        TensorRTBackend().load(_config(), "cuda")
