"""Prompts of an experiment: `synthetic`, `aienergyscore`, or a JSONL/Parquet/CSV path.

Orders (`dataset.order`): prompts are first picked round-robin across the file's groups (its
`source`-like field; one group when it has none), so `n` prompts sample every group;
`interleaved` keeps that round-robin order, `grouped` sorts the picked prompts by group (stable),
`shuffled` draws from the whole file in a seeded random order. When the file has fewer prompts
than `n`, they are reused in the same order and a note says so.

`PromptStream` gives prompts one after another without a count fixed in advance (the serving
scenario's fixed-concurrency mode): synthetic prompts continue the same seeded draw (its first
`count` are `load_prompts`' `count`), file prompts follow `dataset.order` over the whole file and
are reused in turn once it is exhausted.

Truncation to `max_input_tokens`: synthetic prompts are generated at most that long; text prompts
are truncated by the backend's tokenizer at that many tokens (tokenisation is the backend's).
"""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from llem_ray.backends.protocol import Prompt
from llem_ray.datasets import aienergyscore
from llem_ray.datasets.aienergyscore import DatasetUnavailable
from llem_ray.datasets.jsonl import TextRow, read_text_rows
from llem_ray.datasets.synthetic import synthetic_prompts, synthetic_stream

if TYPE_CHECKING:
    from llem_ray.config.experiment import ExperimentConfig

__all__ = ["DatasetUnavailable", "PromptSet", "PromptStream", "check_accessible", "is_synthetic", "load_prompts"]


@dataclass(frozen=True)
class PromptSet:
    """The prompts of a run, where they came from, and notes for the result's warnings."""

    prompts: list[Prompt]
    source: str
    notes: list[str] = field(default_factory=list)


def is_synthetic(config: ExperimentConfig) -> bool:
    """True when the prompts are token ids that need no tokenizer."""
    return config.dataset.source == "synthetic"


FIRST_RECORDS = 100
"""Pre-flight parses this many records of a dataset file (the run reads them all)."""


def _path(config: ExperimentConfig) -> Path:
    if config.dataset.source == "aienergyscore":
        return aienergyscore.resolve_path()
    path = Path(config.dataset.source).expanduser()
    if not path.exists():
        raise DatasetUnavailable(
            f"dataset '{config.dataset.source}' is neither 'synthetic', 'aienergyscore' nor an existing file"
        )
    if not path.is_file():
        raise DatasetUnavailable(f"dataset '{config.dataset.source}' is a directory or device, not a file")
    return path


def check_accessible(config: ExperimentConfig, *, fetch: bool = True) -> str | None:
    """None if the dataset file exists, is a file and its first FIRST_RECORDS records parse, else why not.

    With `fetch` (in the experiment's process) aienergyscore may be downloaded; without it (on the
    driver, before Ray starts) it is checked only when `LLEM_AIENERGYSCORE_PATH` names a local copy,
    since the experiment's node resolves its own hub cache.
    """
    if is_synthetic(config):
        return None
    if config.dataset.source == "aienergyscore" and not fetch and not os.environ.get(aienergyscore.ENV_VAR):
        return None
    try:
        read_text_rows(_path(config), config.dataset.text_field, max_rows=FIRST_RECORDS)
    except (DatasetUnavailable, ValueError, OSError) as exc:
        return str(exc)
    return None


def _round_robin(rows: list[TextRow]) -> list[TextRow]:
    groups: dict[str | None, list[TextRow]] = {}
    for row in rows:
        groups.setdefault(row.group, []).append(row)
    out: list[TextRow] = []
    queues = [list(reversed(g)) for g in groups.values()]
    while queues:
        for queue in queues:
            out.append(queue.pop())
        queues = [q for q in queues if q]
    return out


def order_rows(rows: list[TextRow], order: str, count: int, seed: int) -> list[TextRow]:
    """Pick `count` rows (reusing them when too few) in `order` (see module docstring)."""
    if order == "shuffled":
        pool = list(rows)
        random.Random(seed).shuffle(pool)
    else:
        pool = _round_robin(rows)
    picked = [pool[i % len(pool)] for i in range(count)]
    if order == "grouped":
        rank = {g: i for i, g in enumerate(dict.fromkeys(r.group for r in rows))}
        picked.sort(key=lambda r: rank[r.group])
    return picked


def load_prompts(config: ExperimentConfig, count: int, vocab_size: int | None) -> PromptSet:
    """`count` prompts for `config` (see module docstring). `vocab_size` bounds synthetic ids.

    Raises DatasetUnavailable or ValueError with the reason when the dataset cannot be read.
    """
    if is_synthetic(config):
        length = min(config.dataset.input_len_tokens, config.max_input_tokens)
        prompts = synthetic_prompts(count, length, vocab_size or 32000, config.random_seed)
        notes = [] if vocab_size else ["vocabulary size unknown: synthetic token ids drawn below 32000"]
        return PromptSet(prompts, f"synthetic ({length} tokens)", notes)
    path = _path(config)
    rows = read_text_rows(path, config.dataset.text_field)
    notes = []
    if len(rows) < count:
        notes.append(f"dataset {path.name} has {len(rows)} prompts for n={count}: prompts are reused")
    picked = order_rows(rows, config.dataset.order, count, config.random_seed)
    return PromptSet([Prompt(text=r.text) for r in picked], str(path), notes)


class PromptStream:
    """Prompts of `config` one after another, as many as asked for (see module docstring).

    Raises DatasetUnavailable or ValueError on construction when the dataset cannot be read.
    """

    def __init__(self, config: ExperimentConfig, vocab_size: int | None) -> None:
        self.notes: list[str] = []
        self.taken = 0
        if is_synthetic(config):
            length = min(config.dataset.input_len_tokens, config.max_input_tokens)
            self._prompts: Iterator[Prompt] = synthetic_stream(length, vocab_size or 32000, config.random_seed)
            if not vocab_size:
                self.notes.append("vocabulary size unknown: synthetic token ids drawn below 32000")
            self._pool_size: int | None = None
            return
        path = _path(config)
        rows = read_text_rows(path, config.dataset.text_field)
        pool = order_rows(rows, config.dataset.order, len(rows), config.random_seed)
        self._prompts = itertools.cycle([Prompt(text=r.text) for r in pool])
        self._pool_size, self._name = len(pool), path.name

    def take(self, count: int) -> list[Prompt]:
        """The next `count` prompts; notes (once) when a file's prompts start being reused."""
        out = list(itertools.islice(self._prompts, count))
        self.taken += count
        if self._pool_size is not None and self.taken > self._pool_size and not self.notes:
            self.notes.append(
                f"dataset {self._name} has {self._pool_size} prompts for more requests: prompts are reused"
            )
        return out
