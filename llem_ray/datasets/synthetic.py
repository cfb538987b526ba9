"""Synthetic prompts: seeded random token ids of a fixed length, no tokenizer needed."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

from llem_ray.backends.protocol import Prompt

LOWEST_ID = 3
"""Ids below this are left out: most vocabularies put pad/bos/eos there."""


def _draw(rng: random.Random, length_tokens: int, vocab_size: int) -> Iterator[Prompt]:
    while True:
        yield Prompt(token_ids=tuple(rng.randrange(LOWEST_ID, vocab_size) for _ in range(length_tokens)))


def synthetic_stream(length_tokens: int, vocab_size: int, seed: int) -> Iterator[Prompt]:
    """Endless prompts of `length_tokens` ids drawn uniformly from [LOWEST_ID, vocab_size), seeded.

    The first `count` are `synthetic_prompts(count, ...)`. Raises ValueError if the vocabulary is
    too small to draw from.
    """
    if vocab_size <= LOWEST_ID:
        raise ValueError(f"vocab_size {vocab_size} is too small for synthetic prompts")
    return _draw(random.Random(seed), length_tokens, vocab_size)


def synthetic_prompts(count: int, length_tokens: int, vocab_size: int, seed: int) -> list[Prompt]:
    """`count` prompts of `length_tokens` ids drawn uniformly from [LOWEST_ID, vocab_size), seeded.

    Same arguments give the same prompts on every machine (Python's Mersenne Twister).
    Raises ValueError if the vocabulary is too small to draw from.
    """
    return list(itertools.islice(synthetic_stream(length_tokens, vocab_size, seed), count))
