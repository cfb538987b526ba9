"""Make a small random-weight causal LM with its own tokenizer, entirely offline.

Used by the tests, and on hosts that cannot reach a model hub (e.g. a lent GPU machine), to exercise the
whole tool with the ``python`` runtime. Deterministic: the same arguments give byte-identical weights.

``make_tiny_model(path)`` writes ``config.json``, ``model.safetensors``, ``generation_config.json``,
``tokenizer.json`` and ``tokenizer_config.json`` into ``path`` and returns it.
``make_tiny_model_dir(path)`` (the ``llm-demo tiny-model`` command) does the same into a directory that
must not exist or be empty, all or nothing: it writes a sibling temporary directory and renames it.
Needs ``torch``, ``transformers`` and ``tokenizers`` (the ``serve`` extra); raises ``ImportError`` without.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from .errors import ConfigError

_CORPUS = (
    "the quick brown fox jumps over the lazy dog. "
    "triton serves models over http and grpc. tensorrt builds engines for gpus. "
    "hello world, how are you today? the answer is 42. warm up the cache before traffic arrives. "
)

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}


def make_tokenizer(path: Path, vocab_size: int = 320):
    """Train a byte-level BPE tokenizer on a built-in corpus (any text encodes) and save it to ``path``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)
    fast.save_pretrained(str(path))
    return fast


def make_tiny_model(
    path: Path | str, *, hidden_size: int = 64, num_hidden_layers: int = 2, num_attention_heads: int = 4, seed: int = 0
) -> Path:
    """Write a random-weight Llama-architecture model plus tokenizer to ``path`` (created) and return it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer(path)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_attention_heads,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(str(path), safe_serialization=True)
    return path


def make_tiny_model_dir(path: Path | str) -> Path:
    """`make_tiny_model` into `path` (absolute result), all or nothing (module docstring).

    Raises ConfigError (exit 2) when `path` is a file or a directory that holds anything.
    """
    path = Path(path).resolve()
    if path.is_file() or (path.is_dir() and any(path.iterdir())):
        raise ConfigError(
            f"{path} already exists and is not an empty directory",
            remediation="name a new directory for the tiny model",
            doc="docs/usage.md#tiny-model",
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        make_tiny_model(work)
        if path.is_dir():
            path.rmdir()
        work.rename(path)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return path
