"""Triton model repository generation (seed 001 layout) for the three runtimes.

``generate(workspace, cfg, runtime=None, version=1, *, model_dir=None, tokenizer_dir=None,
engine_dir=None) -> Path`` writes version ``version`` of the configured model into
``workspace.models_dir`` (the directory to pass as ``tritonserver --model-repository``) and returns that
repository root. The served model is always named ``cfg.model.name``; clients call
``/v2/models/<name>/generate`` with ``{"text_input": ..., "max_tokens": N}`` whatever the runtime.

Sources: explicit arguments, else ``state/engine-manifest.json`` when it records a successful build for
the same runtime, else ``cfg.model.local_dir`` (``python``/``llmapi``). Layout per runtime::

    python   models/<name>/config.pbtxt                 Python backend, decoupled per build.decoupled
             models/<name>/<v>/model.py                 llm_demo/templates/python_llm/model.py
             models/<name>/<v>/hf_model -> <model dir>  (tokenizer -> <tokenizer dir> when different)
    llmapi   models/<name>/config.pbtxt, <v>/model.py   from build.tensorrtllm_backend_models/tensorrt_llm
             models/<name>/<v>/model.yaml               LLM-API options (build step) + triton_config
    engine   models/<name>/                             the tensorrtllm_backend ``ensemble``, renamed
             models/{preprocessing,tensorrt_llm,postprocessing}/   templates with ${...} filled in;
             tensorrt_llm's gpt_model_path -> the engine directory

Every version directory also gets ``config.pbtxt`` (a snapshot of the config it was generated with) and
``version.json`` (runtime, sources, hashes, timestamp). Approved versions are linked into
``production/`` by the canary step (llm_demo/canary.py); a regenerated ``config.pbtxt`` gets the pin of the
newest approved version back (llm_demo/approvals.py); ``repo_validate.validate`` checks a repository.

Serving the python runtime: Triton's Python backend stub embeds ``libpython``; it must load the same
one as the interpreter whose stdlib and site-packages it then uses, or extension modules fail with
``undefined symbol`` errors (seen with a pyenv Python next to a system ``libpython3.11.so``). Start
``tritonserver`` with ``python_stub_env(env)``, which puts this interpreter's ``LIBDIR`` first on
``LD_LIBRARY_PATH`` when it holds a shared libpython.

Failure mode: missing sources or templates raise :class:`~llm_demo.errors.RepositoryError` (exit 6).
"""

from __future__ import annotations

import os
import re
import shutil
import sysconfig
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .approvals import write_pin
from .config import PRECISION_PROFILES, DemoConfig
from .errors import RepositoryError
from .paths import Workspace, iso, read_json, utc_now, write_json_atomic

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
TRTLLM_COMPONENTS = ("preprocessing", "tensorrt_llm", "postprocessing")
_DOC = "docs/usage.md#model-repository"

#: Inputs of the python runtime model: (name, Triton type, dims, optional).
PYTHON_INPUTS: tuple[tuple[str, str, str, bool], ...] = (
    ("text_input", "TYPE_STRING", "[ 1 ]", False),
    ("max_tokens", "TYPE_INT32", "[ 1 ]", False),
    ("temperature", "TYPE_FP32", "[ 1 ]", True),
    ("top_k", "TYPE_INT32", "[ 1 ]", True),
    ("top_p", "TYPE_FP32", "[ 1 ]", True),
    ("random_seed", "TYPE_UINT64", "[ 1 ]", True),
    ("stop_words", "TYPE_STRING", "[ -1 ]", True),
    ("stream", "TYPE_BOOL", "[ 1 ]", True),
)


def python_stub_env(env: Mapping[str, str]) -> dict[str, str]:
    """Copy of ``env`` with this interpreter's shared-libpython directory first on ``LD_LIBRARY_PATH``
    (unchanged when the interpreter is statically linked). See the module docstring."""
    out = dict(env)
    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    if libdir and soname and (Path(libdir) / soname).is_file():
        out["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p)
    return out


def _param(key: str, value: object) -> str:
    return f'parameters {{ key: "{key}" value {{ string_value: "{value}" }} }}'


def python_config_pbtxt(cfg: DemoConfig, model_dir: str = "hf_model", tokenizer_dir: str = "hf_model") -> str:
    """config.pbtxt of the python runtime model (paths relative to the version directory allowed)."""
    b = cfg.build
    inputs = ",\n".join(
        f'  {{ name: "{n}" data_type: {t} dims: {d}{" optional: true" if opt else ""} }}'
        for n, t, d, opt in PYTHON_INPUTS
    )
    params = {
        "model_dir": model_dir,
        "tokenizer_dir": tokenizer_dir,
        "dtype": PRECISION_PROFILES[cfg.precision.profile][0],
        "device": "auto",
        "max_input_len": b.max_input_len,
        "max_seq_len": b.max_seq_len,
        "tensor_parallelism": b.tensor_parallelism,
    }
    return "\n".join(
        [
            "# generated by llm-demo (python runtime); see llm_demo/repository.py",
            f'name: "{cfg.model.name}"',
            'backend: "python"',
            f"max_batch_size: {b.max_batch_size}",
            f"model_transaction_policy {{ decoupled: {'true' if b.decoupled else 'false'} }}",
            f"input [\n{inputs}\n]",
            'output [\n  { name: "text_output" data_type: TYPE_STRING dims: [ -1 ] }\n]',
            f"instance_group [ {{ count: {b.instance_count} kind: KIND_CPU }} ]",
            *(_param(k, v) for k, v in params.items()),
            "",
        ]
    )


def fill_template(text: str, values: Mapping[str, object]) -> str:
    """Replace ``${key}`` placeholders (tensorrtllm_backend's fill_template.py convention); others stay."""
    return re.sub(r"\$\{(\w+)\}", lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), text)


def trtllm_template_values(cfg: DemoConfig, engine_dir: str, tokenizer_dir: str) -> dict[str, object]:
    """Values for the tensorrtllm_backend config templates, from the build section."""
    b = cfg.build
    return {
        "triton_max_batch_size": b.max_batch_size,
        "decoupled_mode": "true" if b.decoupled else "false",
        "max_beam_width": b.max_beam_width,
        "engine_dir": engine_dir,
        "tokenizer_dir": tokenizer_dir,
        "triton_backend": "tensorrtllm",
        "batching_strategy": "inflight_fused_batching",
        "kv_cache_free_gpu_mem_fraction": b.kv_cache_free_gpu_mem_fraction,
        "max_queue_delay_microseconds": 0,
        "preprocessing_instance_count": b.instance_count,
        "postprocessing_instance_count": b.instance_count,
        "bls_instance_count": b.instance_count,
        "logits_datatype": "TYPE_FP32",
        "encoder_input_features_data_type": "TYPE_FP16",
        "exclude_input_in_output": "true",
        "enable_kv_cache_reuse": "false",
        "tensor_parallelism": b.tensor_parallelism,
    }


def _sources(workspace: Workspace, cfg: DemoConfig, runtime: str) -> dict[str, str | None]:
    manifest = read_json(workspace.state_dir / "engine-manifest.json", default=None) or {}
    if manifest.get("status") == "succeeded" and manifest.get("runtime") == runtime:
        return {k: manifest.get(k) for k in ("model_dir", "tokenizer_dir", "engine_dir")}
    if runtime in ("python", "llmapi") and cfg.model.local_dir:
        local = str(Path(cfg.model.local_dir).expanduser().resolve())
        tok = cfg.model.tokenizer if cfg.model.tokenizer and Path(cfg.model.tokenizer).expanduser().is_dir() else local
        return {"model_dir": local, "tokenizer_dir": str(Path(tok).expanduser().resolve()), "engine_dir": None}
    raise RepositoryError(
        f"no built model for runtime {runtime!r}: state/engine-manifest.json has no successful {runtime} build",
        remediation="run `llm-demo prepare` (or `llm-demo build`) first, or set model.local_dir",
        doc=_DOC,
    )


def _link(link: Path, target: Path) -> None:
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(target, link, target_is_directory=True)


def _fresh_version_dir(model_root: Path, version: int) -> Path:
    vdir = model_root / str(version)
    if vdir.exists():
        shutil.rmtree(vdir)
    vdir.mkdir(parents=True)
    return vdir


def _templates(cfg: DemoConfig, sub: str) -> Path:
    base = cfg.build.tensorrtllm_backend_models
    if not base:
        raise RepositoryError(
            f"build.tensorrtllm_backend_models is not set; "
            f"the {cfg.runtime} runtime needs tensorrtllm_backend's model templates",
            remediation=(
                "set it to <tensorrtllm_backend>/all_models/inflight_batcher_llm (engine) "
                "or .../all_models/llmapi (llmapi)"
            ),
            doc="docs/prerequisites.md#build-tools",
        )
    path = Path(base).expanduser() / sub
    if not (path / "config.pbtxt").is_file():
        raise RepositoryError(
            f"template {path / 'config.pbtxt'} not found",
            remediation="check build.tensorrtllm_backend_models",
            doc="docs/prerequisites.md#build-tools",
        )
    return path


def _copy_component(src: Path, dest_root: Path, version: int, name: str, values: Mapping[str, object]) -> str:
    """Copy a template model dir as ``dest_root`` version ``version``; return the filled config text."""
    text = fill_template((src / "config.pbtxt").read_text(encoding="utf-8"), values)
    text = re.sub(r'^(\s*name:\s*)"[^"]*"', lambda m: f'{m.group(1)}"{name}"', text, count=1, flags=re.M)
    dest_root.mkdir(parents=True, exist_ok=True)
    vdir = _fresh_version_dir(dest_root, version)
    template_version = next((p for p in sorted(src.iterdir()) if p.is_dir() and p.name.isdigit()), None)
    if template_version is not None:
        shutil.copytree(template_version, vdir, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    (dest_root / "config.pbtxt").write_text(text, encoding="utf-8")
    (vdir / "config.pbtxt").write_text(text, encoding="utf-8")
    return text


def _llmapi_model_yaml(cfg: DemoConfig, engine_dir: str | None, model_dir: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if engine_dir and (Path(engine_dir) / "llm_api_config.yaml").is_file():
        options = yaml.safe_load((Path(engine_dir) / "llm_api_config.yaml").read_text(encoding="utf-8")) or {}
    options.setdefault("model", model_dir)
    options["triton_config"] = {"max_batch_size": cfg.build.max_batch_size, "decoupled": cfg.build.decoupled}
    return options


def generate(
    workspace: Workspace,
    cfg: DemoConfig,
    runtime: str | None = None,
    version: int = 1,
    *,
    model_dir: Path | str | None = None,
    tokenizer_dir: Path | str | None = None,
    engine_dir: Path | str | None = None,
) -> Path:
    """Write ``models/<name>/<version>/`` for ``runtime`` (default ``cfg.runtime``); return the repository root."""
    runtime = runtime or cfg.runtime
    if version < 1:
        raise RepositoryError(f"version must be >= 1, got {version}", doc=_DOC)
    src: dict[str, str | None] = {"model_dir": None, "tokenizer_dir": None, "engine_dir": None}
    if model_dir is not None or engine_dir is not None:
        src.update(model_dir=str(model_dir) if model_dir else None, engine_dir=str(engine_dir) if engine_dir else None)
    else:
        src = _sources(workspace, cfg, runtime)
    src["tokenizer_dir"] = str(tokenizer_dir) if tokenizer_dir else (src.get("tokenizer_dir") or src.get("model_dir"))
    name = cfg.model.name
    repo = workspace.models_dir
    model_root = repo / name
    model_root.mkdir(parents=True, exist_ok=True)

    if runtime == "python":
        if not src["model_dir"]:
            raise RepositoryError("the python runtime needs a model directory", doc=_DOC)
        vdir = _fresh_version_dir(model_root, version)
        shutil.copy2(TEMPLATE_DIR / "python_llm" / "model.py", vdir / "model.py")
        _link(vdir / "hf_model", Path(src["model_dir"]).resolve())
        tok_rel = "hf_model"
        if Path(src["tokenizer_dir"]).resolve() != Path(src["model_dir"]).resolve():
            _link(vdir / "tokenizer", Path(src["tokenizer_dir"]).resolve())
            tok_rel = "tokenizer"
        text = python_config_pbtxt(cfg, "hf_model", tok_rel)
        (model_root / "config.pbtxt").write_text(text, encoding="utf-8")
        (vdir / "config.pbtxt").write_text(text, encoding="utf-8")
    elif runtime == "llmapi":
        tpl = _templates(cfg, "tensorrt_llm")
        values = trtllm_template_values(cfg, src.get("engine_dir") or "", src["tokenizer_dir"] or "")
        _copy_component(tpl, model_root, version, name, values)
        vdir = model_root / str(version)
        options = _llmapi_model_yaml(cfg, src.get("engine_dir"), src["model_dir"] or cfg.model.id or "")
        (vdir / "model.yaml").write_text(yaml.safe_dump(options, sort_keys=False), encoding="utf-8")
    elif runtime == "engine":
        if not src.get("engine_dir"):
            raise RepositoryError("the engine runtime needs an engine directory (run `llm-demo build`)", doc=_DOC)
        values = trtllm_template_values(cfg, src["engine_dir"], src["tokenizer_dir"] or "")
        for comp in TRTLLM_COMPONENTS:
            _copy_component(_templates(cfg, comp), repo / comp, version, comp, values)
        _copy_component(_templates(cfg, "ensemble"), model_root, version, name, values)
        vdir = model_root / str(version)
    else:
        raise RepositoryError(f"unknown runtime {runtime!r}", doc=_DOC)

    manifest = read_json(workspace.state_dir / "engine-manifest.json", default=None) or {}
    write_json_atomic(
        vdir / "version.json",
        {
            "model": name,
            "version": version,
            "runtime": runtime,
            "generated_at": iso(utc_now()),
            "sources": src,
            "config_hash": cfg.config_hash(),
            "engine_manifest": {k: manifest.get(k) for k in ("run", "built_at", "input_model", "engine_sha256")}
            if manifest
            else None,
        },
    )
    write_pin(workspace, name)  # the rewritten config.pbtxt keeps serving the newest approved version
    return repo
