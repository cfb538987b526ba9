"""`datasets.PromptStream`: prompts without a count fixed in advance (the serving scenario's fixed concurrency)."""

import json

import pytest

from llem_ray import datasets
from llem_ray.config.experiment import ExperimentConfig
from llem_ray.datasets.synthetic import synthetic_stream


def test_synthetic_stream_continues_the_seeded_draw_of_load_prompts():
    config = ExperimentConfig(dataset={"source": "synthetic", "input_len_tokens": 300}, max_input_tokens=12)
    stream = datasets.PromptStream(config, vocab_size=500)
    taken = stream.take(3) + stream.take(4)
    assert taken == datasets.load_prompts(config, 7, vocab_size=500).prompts
    assert all(len(p.token_ids) == 12 for p in taken) and len(set(taken)) == 7
    assert stream.taken == 7 and stream.notes == []


def test_synthetic_stream_refuses_a_tiny_vocabulary_at_once():
    with pytest.raises(ValueError, match="too small"):
        synthetic_stream(4, vocab_size=3, seed=0)


def test_file_prompts_follow_the_order_and_are_reused_with_a_note(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"q{i}", "source": "ab"[i % 2]}) + "\n" for i in range(4)))
    config = ExperimentConfig(dataset={"source": str(path), "order": "interleaved"})
    stream = datasets.PromptStream(config, vocab_size=None)
    assert [p.text for p in stream.take(4)] == [p.text for p in datasets.load_prompts(config, 4, None).prompts]
    assert stream.notes == []
    assert [p.text for p in stream.take(2)] == [p.text for p in datasets.load_prompts(config, 4, None).prompts][:2]
    assert stream.notes == ["dataset p.jsonl has 4 prompts for more requests: prompts are reused"]
