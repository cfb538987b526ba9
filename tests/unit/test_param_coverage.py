"""Engine-argument coverage (PARAM-04) against engine module objects: the stand-in packages and ad-hoc ones."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from llem_ray.backends.coverage import argument_names, coverage, main

FAKES = Path(__file__).parent / "fake_engines"


@pytest.fixture
def fake_modules(monkeypatch):
    monkeypatch.syspath_prepend(str(FAKES))
    import tensorrt_llm
    import vllm

    yield vllm, tensorrt_llm
    for name in [n for n in sys.modules if n.split(".")[0] in ("vllm", "tensorrt_llm")]:
        del sys.modules[name]


def test_vllm_section_against_engine_args(fake_modules):
    report = coverage("vllm", module=fake_modules[0])
    assert {"max_num_seqs", "gpu_memory_utilization", "compilation_config", "speculative_config"} <= set(report.covered)
    assert {"model", "dtype", "tensor_parallel_size", "load_format", "seed"} <= set(report.set_by_backend)
    assert {"tokenizer_mode", "revision", "max_logprobs", "pipeline_parallel_size"} <= set(report.uncovered)
    assert report.stale == ()
    assert not set(report.covered) & set(report.uncovered)
    assert "only via passthrough_kwargs (" in report.render()


def test_a_new_engine_release_is_audited_by_introspection():
    fields = [("model", str), ("max_num_seqs", int), ("brand_new_knob", int), ("dtype", str)]
    engine = SimpleNamespace(EngineArgs=dataclasses.make_dataclass("EngineArgs", fields), __version__="9.9")
    report = coverage("vllm", module=engine)
    assert report.uncovered == ("brand_new_knob",)
    assert "attention_backend" in report.stale and "max_num_seqs" not in report.stale  # renamed/removed upstream
    assert report.engine_version == "9.9"
    assert report.covered_fraction == pytest.approx(3 / 4)


def test_tensorrt_runtimes_use_their_argument_models(fake_modules):
    trtllm = fake_modules[1]
    torch_report = coverage("tensorrt", module=trtllm)
    assert {
        "kv_cache_config",
        "cuda_graph_config",
        "quant_config",
        "scheduler_config",
        "attn_backend",
        "torch_compile_config",
    } <= set(torch_report.covered)
    assert {"moe_config", "stream_interval", "sampler_type"} <= set(torch_report.uncovered)
    assert torch_report.stale == ()  # engine-only max_input_len is not held against the PyTorch runtime
    engine_report = coverage("tensorrt", module=trtllm, runtime="engine")
    assert "build_config" in engine_report.covered and "fast_build" in engine_report.uncovered
    assert engine_report.stale == ()


def test_signature_fallback_without_argument_models():
    class LLM:
        def __init__(self, model, *, tensor_parallel_size=1, max_batch_size=None, exotic=3, **kwargs):
            pass

    report = coverage("tensorrt", module=SimpleNamespace(LLM=LLM))
    assert argument_names(LLM.__init__) == {"model", "tensor_parallel_size", "max_batch_size", "exotic"}
    assert report.covered == ("max_batch_size",) and report.uncovered == ("exotic",)
    assert "kv_cache_free_gpu_memory_fraction" in report.stale


def test_unknown_backend_and_missing_engines(capsys):
    with pytest.raises(KeyError, match="pytorch"):
        coverage("pytorch")
    assert main(["vllm"]) == 1  # vLLM cannot be installed on this machine
    assert "vllm: engine not installed here" in capsys.readouterr().out
