"""The PyTorch backend on CPU with real tiny random-weight transformers models (no download)."""

import json

import pytest

from llem_ray.backends import shapes
from llem_ray.backends.protocol import Prompt
from llem_ray.backends.pytorch.backend import PyTorchBackend
from llem_ray.backends.pytorch.loading import byte_level_tokenizer
from llem_ray.config.experiment import ExperimentConfig
from llem_ray.errors import BackendError

TINY_PARAMS = 336_192  # llem/tiny-llama: tied embeddings 4096x64 + 2 layers


def _config(**overrides):
    base = dict(dataset="synthetic", max_output_tokens=8, pytorch={"batch_size": 2}, precision="fp32")
    return ExperimentConfig(**{**base, **overrides})


def _prompts(n, length=6):
    return [Prompt(token_ids=tuple(range(3 + i, 3 + i + length))) for i in range(n)]


@pytest.fixture
def backend():
    created = PyTorchBackend()
    yield created
    created.unload()


def test_builtin_shape_loads_with_random_weights(backend):
    info = backend.load(_config(precision="bf16"), "cpu")
    assert info.n_parameters == TINY_PARAMS and info.dtype == "bfloat16" and info.vocab_size == 4096
    assert info.device == "cpu"


def test_fixed_length_batches_and_token_timing(backend):
    backend.load(_config(), "cpu")
    out = backend.generate(_prompts(5), max_new_tokens=8)
    assert out.output_tokens == 5 * 8 and out.input_tokens == 5 * 6
    assert len(out.batch_latencies_s) == 3 and len(out.requests) == 5
    for req in out.requests:
        assert req.output_tokens == 8 and len(req.itl_s) == 7
        assert 0 < req.ttft_s <= req.latency_s and all(i >= 0 for i in req.itl_s)


def test_same_seed_builds_the_same_random_weights():
    runs = []
    for _ in range(2):
        b = PyTorchBackend()
        b.load(_config(), "cpu")
        runs.append(next(b.model.parameters()).sum().item())
        b.unload()
    assert runs[0] == runs[1]


def test_beam_search_reports_batch_latency_only(backend):
    backend.load(_config(decoder={"num_beams": 2}), "cpu")
    out = backend.generate(_prompts(2), 4)
    assert out.output_tokens == 8 and out.requests[0].ttft_s is None
    assert out.requests[0].latency_s == out.batch_latencies_s[0]


def test_variable_length_counts_tokens_up_to_eos(tmp_path, backend):
    shape = {**shapes.builtin_shape("llem/tiny-llama"), "vocab_size": 4}
    (tmp_path / "config.json").write_text(json.dumps(shape))
    config = _config(model=str(tmp_path), weights="random", decoder={"fixed_output_length": False, "do_sample": True})
    backend.load(config, "cpu")
    out = backend.generate([Prompt(token_ids=(3, 3))] * 4, 32)
    counts = [r.output_tokens for r in out.requests]
    assert out.output_tokens == sum(counts) < 4 * 32 and min(counts) >= 1


def test_local_config_json_file_is_a_model_source(tmp_path, backend):
    shape = {**shapes.builtin_shape("llem/tiny-llama"), "num_hidden_layers": 1}
    path = tmp_path / "my-config.json"
    path.write_text(json.dumps(shape))
    info = backend.load(_config(model=str(path), weights="random"), "cpu")
    assert 0 < info.n_parameters < TINY_PARAMS


def test_text_prompts_use_byte_tokenizer_and_truncate(backend):
    info = backend.load(_config(dataset="aienergyscore", max_input_tokens=16), "cpu")
    assert any("byte-level" in note for note in info.notes)
    out = backend.generate([Prompt(text="hello"), Prompt(text="x" * 100)], 4)
    assert out.input_tokens == 5 + 16
    assert backend.prefill([Prompt(text="hello")]).input_tokens == 5


def test_prefill_runs_one_pass_per_batch_without_output(backend):
    backend.load(_config(), "cpu")
    out = backend.prefill(_prompts(3))
    assert out.output_tokens == 0 and out.input_tokens == 18 and len(out.batch_latencies_s) == 2


def test_static_cache_and_passthrough_kwargs(backend):
    info = backend.load(
        _config(pytorch={"batch_size": 2, "static_kv_cache": True}, passthrough_kwargs={"top_k": 5}), "cpu"
    )
    assert backend.generate(_prompts(2), 4).output_tokens == 8
    assert info.shape_specialised is False  # transformers compiles a static cache on CUDA only


def test_compiled_code_is_reported_shape_specialised(backend):
    assert backend.load(_config(pytorch={"torch_compile": True}), "cpu").shape_specialised is True
    assert backend.load(_config(), "cpu").shape_specialised is False


def _compiled(forward) -> bool:
    return hasattr(forward, "_torchdynamo_orig_callable")


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compilation_is_left_to_transformers_with_a_static_cache(backend):
    """Static cache: the forward is never wrapped (transformers compiles decode steps itself; wrapping
    too broke CUDA graphs on an H100), torch_compile sets or disables that compilation."""
    backend.load(
        _config(pytorch={"static_kv_cache": True, "torch_compile": True, "torch_compile_mode": "max-autotune"}), "cpu"
    )
    generation, _ = backend._call_config(4)
    assert not _compiled(backend.model.forward)
    assert generation.compile_config.mode == "max-autotune" and not generation.disable_compile
    assert backend.generate(_prompts(2), 4).output_tokens == 8
    backend.load(_config(pytorch={"static_kv_cache": True, "torch_compile": False}), "cpu")
    assert backend._call_config(4)[0].disable_compile and not _compiled(backend.model.forward)
    backend.load(_config(pytorch={"torch_compile": True}), "cpu")
    assert _compiled(backend.model.forward) and backend._call_config(4)[0].compile_config is None


def test_bad_passthrough_is_a_backend_error(backend):
    backend.load(_config(passthrough_kwargs={"no_such_option": 1}), "cpu")
    with pytest.raises(BackendError, match="no_such_option"):
        backend.generate(_prompts(1), 2)


def test_unusable_sources_fail_with_a_reason(backend):
    with pytest.raises(BackendError, match="built-in"):
        backend.load(_config(model="llem/no-such-shape"), "cpu")
    with pytest.raises(BackendError, match="Offline"):
        backend.load(_config(model="nobody/nothing-here", weights="random"), "cpu")
    with pytest.raises(BackendError, match="peft"):
        backend.load(_config(lora={"adapter": "some/adapter"}), "cpu")


def test_unload_is_idempotent_and_final(backend):
    backend.load(_config(), "cpu")
    backend.unload()
    backend.unload()
    with pytest.raises(BackendError, match="no model"):
        backend.generate(_prompts(1), 2)


def test_byte_level_tokenizer_round_trips_utf8():
    tok = byte_level_tokenizer()
    ids = tok("héllo")["input_ids"]
    assert len(ids) == 6 and max(ids) < 256 and tok.decode(ids) == "héllo"
    assert tok.pad_token_id == 256 and tok.padding_side == "left"
