import json

import pytest

from llem_ray import datasets
from llem_ray.config.experiment import ExperimentConfig
from llem_ray.datasets import aienergyscore
from llem_ray.datasets.jsonl import TextRow, read_text_rows
from llem_ray.datasets.synthetic import LOWEST_ID, synthetic_prompts


def test_synthetic_is_seeded_bounded_and_fixed_length():
    a = synthetic_prompts(5, 7, vocab_size=50, seed=1)
    assert a == synthetic_prompts(5, 7, vocab_size=50, seed=1)
    assert a != synthetic_prompts(5, 7, vocab_size=50, seed=2)
    ids = [i for p in a for i in p.token_ids]
    assert all(len(p.token_ids) == 7 for p in a) and min(ids) >= LOWEST_ID and max(ids) < 50


def test_synthetic_prompts_are_truncated_to_max_input_tokens():
    config = ExperimentConfig(dataset={"source": "synthetic", "input_len_tokens": 300}, max_input_tokens=40)
    prompt_set = datasets.load_prompts(config, 3, vocab_size=1000)
    assert [len(p.token_ids) for p in prompt_set.prompts] == [40, 40, 40]
    assert datasets.check_accessible(config) is None


def test_shared_aienergyscore_copy_skips_its_provenance_header(jsonl_data):
    rows = read_text_rows(jsonl_data)
    assert len(rows) == 1000
    assert all(r.text and r.group is None for r in rows)


def test_aienergyscore_reads_the_env_var_path(jsonl_data, monkeypatch):
    monkeypatch.setenv(aienergyscore.ENV_VAR, str(jsonl_data))
    config = ExperimentConfig(dataset="aienergyscore", n=12)
    prompt_set = datasets.load_prompts(config, 12, vocab_size=None)
    first = read_text_rows(jsonl_data)[0].text
    assert prompt_set.prompts[0].text == first and len(prompt_set.prompts) == 12


def test_aienergyscore_offline_error_names_env_var_and_path_option(monkeypatch, tmp_path):
    monkeypatch.delenv(aienergyscore.ENV_VAR, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    problem = datasets.check_accessible(ExperimentConfig(dataset="aienergyscore"))
    assert problem is not None and aienergyscore.ENV_VAR in problem and ".jsonl" in problem


def test_missing_path_is_reported(tmp_path):
    problem = datasets.check_accessible(ExperimentConfig(dataset=str(tmp_path / "nope.jsonl")))
    assert problem is not None and "nope.jsonl" in problem


def test_jsonl_without_text_field_names_the_fields(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"q": "x"}\n')
    with pytest.raises(ValueError, match="text_field"):
        read_text_rows(path)
    assert read_text_rows(path, text_field="q") == [TextRow("x", None)]


def _grouped_file(tmp_path):
    path = tmp_path / "g.jsonl"
    rows = [{"text": f"{src}{i}", "source": src} for src in "ab" for i in range(3)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


@pytest.mark.parametrize(
    ("order", "expected"), [("interleaved", ["a0", "b0", "a1", "b1"]), ("grouped", ["a0", "a1", "b0", "b1"])]
)
def test_orders_pick_round_robin_then_arrange(tmp_path, order, expected):
    config = ExperimentConfig(dataset={"source": str(_grouped_file(tmp_path)), "order": order})
    assert [p.text for p in datasets.load_prompts(config, 4, None).prompts] == expected


def test_shuffled_is_seeded_and_reuses_prompts_with_a_note(tmp_path):
    path = _grouped_file(tmp_path)
    make = lambda seed: ExperimentConfig(dataset={"source": str(path), "order": "shuffled"}, random_seed=seed)  # noqa: E731
    a = datasets.load_prompts(make(1), 8, None)
    assert [p.text for p in a.prompts] == [p.text for p in datasets.load_prompts(make(1), 8, None).prompts]
    assert [p.text for p in a.prompts][:6] != [p.text for p in datasets.load_prompts(make(2), 8, None).prompts][:6]
    assert a.prompts[6] == a.prompts[0] and any("reused" in n for n in a.notes)
