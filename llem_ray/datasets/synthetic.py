"""Synthetic prompts: seeded random token ids of a fixed length, no tokenizer needed."""

from __future__ import annotations

import random

from llem_ray.backends.protocol import Prompt

LOWEST_ID = 3
"""Ids below this are left out: most vocabularies put pad/bos/eos there."""


def synthetic_prompts(count: int, length_tokens: int, vocab_size: int, seed: int) -> list[Prompt]:
    """`count` prompts of `length_tokens` ids drawn uniformly from [LOWEST_ID, vocab_size), seeded.

    Same arguments give the same prompts on every machine (Python's Mersenne Twister).
    Raises ValueError if the vocabulary is too small to draw from.
    """
    if vocab_size <= LOWEST_ID:
        raise ValueError(f"vocab_size {vocab_size} is too small for synthetic prompts")
    rng = random.Random(seed)
    return [
        Prompt(token_ids=tuple(rng.randrange(LOWEST_ID, vocab_size) for _ in range(length_tokens)))
        for _ in range(count)
    ]
