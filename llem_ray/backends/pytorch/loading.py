"""Model and tokenizer loading for the PyTorch backend (imports torch and transformers).

Sources of a model (`ExperimentConfig.model`):
- `llem/<shape>`: a config shipped with the package (backends/shapes), always random weights;
- a local path: a `config.json` file, or a directory (config.json, plus weights for `pretrained`);
- a hub id: `from_pretrained` (pretrained), or its config via `AutoConfig` (random weights).

`weights: random` builds the model from its config with no weight download (optimum-benchmark's
`no_weights`): `AutoModelForCausalLM.from_config` under the experiment's dtype, seeded with
`random_seed`, directly on the target device. When the model must be spread over several GPUs
(`device_map`) or quantised at load, the random model is first saved to a temporary directory and
loaded back with `from_pretrained`, which is what applies those options.

Tokenizer for text prompts: the model's own (`AutoTokenizer`) for pretrained and hub/local random
models that ship one; otherwise (built-in shapes, bare config.json) a byte-level tokenizer built
locally with the `tokenizers` library: 256 byte tokens + <pad> <s> </s>, no merges, no download.
"""

from __future__ import annotations

import json
import tempfile
from typing import TYPE_CHECKING, Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from llem_ray.backends import shapes
from llem_ray.config.ssot import TORCH_DTYPES
from llem_ray.errors import BackendError

if TYPE_CHECKING:
    from llem_ray.backends.pytorch.config import PyTorchConfig
    from llem_ray.config.experiment import ExperimentConfig

BYTE_TOKENIZER_SPECIALS = ("<pad>", "<s>", "</s>")


def torch_dtype(precision: str) -> torch.dtype:
    """torch dtype of a precision name ('bf16' → torch.bfloat16)."""
    return getattr(torch, TORCH_DTYPES[precision])


def hf_config(model: str) -> Any:
    """transformers config of `model` (built-in shape, local config.json, or hub). Raises BackendError."""
    local = shapes.local_config_path(model)
    try:
        if model.startswith(shapes.PREFIX) or (local is not None and local.name != "config.json"):
            data = dict(shapes.builtin_shape(model) if local is None else json.loads(local.read_text()))
            return AutoConfig.for_model(data.pop("model_type"), **data)
        return AutoConfig.from_pretrained(str(local.parent) if local is not None else model)
    except KeyError as exc:
        raise BackendError(f"cannot build a config for '{model}': {exc.args[0]}") from None
    except (OSError, ValueError) as exc:
        raise BackendError(
            f"cannot read the config of '{model}' ({exc}). Offline? Use a local config.json path "
            f"or a built-in shape ({', '.join(shapes.builtin_names())})."
        ) from None


def byte_level_tokenizer() -> PreTrainedTokenizerFast:
    """A download-free byte-level tokenizer: ids 0-255 are bytes, then <pad>, <s>, </s>; pads left."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    for special in BYTE_TOKENIZER_SPECIALS:
        vocab[special] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    pad, bos, eos = BYTE_TOKENIZER_SPECIALS
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=pad, bos_token=bos, eos_token=eos, padding_side="left"
    )


def load_tokenizer(config: ExperimentConfig) -> tuple[Any, list[str]]:
    """(tokenizer padding on the left, notes) for text prompts of `config`."""
    if config.model.startswith(shapes.PREFIX):
        return byte_level_tokenizer(), [f"{config.model} uses the built-in byte-level tokenizer"]
    local = shapes.local_config_path(config.model)
    source = str(local.parent) if local is not None else config.model
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, padding_side="left")
    except (OSError, ValueError) as exc:
        if config.weights == "pretrained":
            raise BackendError(f"cannot load the tokenizer of '{config.model}': {exc}") from None
        return byte_level_tokenizer(), [f"no tokenizer found for {config.model}: the byte-level tokenizer is used"]
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, []


def _load_kwargs(config: ExperimentConfig, section: PyTorchConfig, device: str, n_gpus: int) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"dtype": torch_dtype(config.precision)}
    if section.attn_implementation:
        kwargs["attn_implementation"] = section.attn_implementation
    if section.low_cpu_mem_usage is not None:
        kwargs["low_cpu_mem_usage"] = section.low_cpu_mem_usage
    if section.load_in_8bit or section.load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_8bit=bool(section.load_in_8bit), load_in_4bit=bool(section.load_in_4bit)
        )
    if device == "cuda" and (section.device_map or n_gpus > 1):
        kwargs["device_map"] = section.device_map or "auto"
    elif device == "cuda" and "quantization_config" in kwargs:
        kwargs["device_map"] = {"": 0}
    return kwargs


def build_model(config: ExperimentConfig, section: PyTorchConfig, device: str) -> torch.nn.Module:
    """The model of `config` on `device` (all visible GPUs when several), in eval mode. Raises BackendError."""
    n_gpus = torch.cuda.device_count() if device == "cuda" else 0
    kwargs = _load_kwargs(config, section, device, n_gpus)
    torch.manual_seed(config.random_seed)
    try:
        if config.weights == "pretrained" and not config.model.startswith(shapes.PREFIX):
            model = AutoModelForCausalLM.from_pretrained(config.model, **kwargs)
            if "device_map" not in kwargs:
                model = model.to(device)
        elif "device_map" in kwargs or "quantization_config" in kwargs:
            model = _random_via_checkpoint(config, kwargs)
        else:
            init_kwargs = {k: v for k, v in kwargs.items() if k in ("dtype", "attn_implementation")}
            with torch.device("cuda:0" if device == "cuda" else "cpu"):
                model = AutoModelForCausalLM.from_config(hf_config(config.model), **init_kwargs)
    except BackendError:
        raise
    except (ImportError, OSError, ValueError, RuntimeError) as exc:
        raise BackendError(f"cannot load '{config.model}': {type(exc).__name__}: {exc}") from exc
    return model.eval()


def _random_via_checkpoint(config: ExperimentConfig, kwargs: dict[str, Any]) -> torch.nn.Module:
    """Random weights saved to a temporary checkpoint and loaded with `device_map` / quantisation."""
    init_kwargs = {"dtype": kwargs["dtype"]}
    model = AutoModelForCausalLM.from_config(hf_config(config.model), **init_kwargs)
    with tempfile.TemporaryDirectory(prefix="llem-random-") as tmp:
        model.save_pretrained(tmp)
        del model
        return AutoModelForCausalLM.from_pretrained(tmp, **kwargs)


def apply_lora(model: torch.nn.Module, adapter: str, merge: bool) -> torch.nn.Module:
    """`model` with the LoRA `adapter` (merged into the weights when `merge`). Raises BackendError."""
    try:
        from peft import PeftModel
    except ImportError:
        raise BackendError("lora needs the 'peft' package: pip install peft") from None
    try:
        model = PeftModel.from_pretrained(model, adapter)
    except (OSError, ValueError) as exc:
        raise BackendError(f"cannot load LoRA adapter '{adapter}': {exc}") from exc
    return model.merge_and_unload() if merge else model
