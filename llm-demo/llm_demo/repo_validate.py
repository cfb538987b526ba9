"""Validation of a Triton model repository before deployment (seed 001: "Repository validation").

``validate(repo, name=None) -> list[Problem]`` inspects every model directory of ``repo`` (or only
``name`` and, for an ensemble, the models its steps use):

* structure: ``config.pbtxt`` present and parseable with Triton's own schema
  (``tritonclient.grpc.model_config_pb2``), ``name`` equal to the directory, ``backend``/``platform`` set,
  at least one numeric version directory, each holding ``config.pbtxt`` (the version's snapshot), and
  every version a ``version_policy`` names (llm-demo's approved-version pin) present on disk;
* required fields, per kind of model: ``max_batch_size`` written explicitly; decoupled mode
  (``model_transaction_policy``) declared for LLM models; tensor parallelism (python runtime:
  ``tensor_parallelism`` parameter; engine: ``mapping.tp_size`` in the engine's ``config.json``);
  python runtime: ``model.py``, ``model_dir`` resolving to a transformers model directory, the
  ``text_input``/``max_tokens`` inputs and ``text_output`` output; TensorRT-LLM: ``gpt_model_path``
  pointing at an engine directory with ``config.json`` and ``rank0.engine``, ``gpt_model_type``,
  ``max_beam_width``; ensemble: every step's model exists; llmapi: ``model.yaml`` with ``model``,
  ``tensor_parallel_size`` and ``triton_config``; no unfilled ``${...}`` template placeholder outside
  optional ``parameters`` (tensorrtllm_backend reads an unfilled parameter as unset).

``validate_or_raise(...)`` logs each problem to ``logs/<run>/repository.jsonl`` and raises
:class:`~llm_demo.errors.RepositoryError` (exit 6) listing them; deployment must stop there.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import RepositoryError
from .events import EventLog

_DOC = "docs/usage.md#model-repository"
LLM_INPUTS = ("text_input", "max_tokens")


@dataclass(frozen=True)
class Problem:
    """One finding: the model, the file concerned and what is wrong."""

    model: str
    path: str
    message: str


def parse_config(text: str) -> Any:
    """Parse config.pbtxt text with Triton's schema (protobuf ParseError when it does not parse)."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:  # pragma: no cover - the serve extra is missing
        raise RepositoryError(
            f"cannot validate without tritonclient[grpc]: {exc}", remediation="pip install 'llm-demo[serve]'", doc=_DOC
        ) from None
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def _without_parameters(config: Any) -> str:
    from google.protobuf import text_format

    copy = type(config)()
    copy.CopyFrom(config)
    copy.ClearField("parameters")
    return text_format.MessageToString(copy)


def _params(config: Any) -> dict[str, str]:
    return {k: v.string_value for k, v in config.parameters.items()}


def _resolve(version_dir: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else version_dir / path


def _check_python_llm(model: str, mdir: Path, versions: list[Path], config: Any, add) -> None:
    params = _params(config)
    names_in = {i.name for i in config.input}
    for needed in LLM_INPUTS:
        if needed not in names_in:
            add(model, mdir / "config.pbtxt", f"input {needed!r} missing")
    if "text_output" not in {o.name for o in config.output}:
        add(model, mdir / "config.pbtxt", "output 'text_output' missing")
    if "tensor_parallelism" not in params:
        add(model, mdir / "config.pbtxt", "parameter 'tensor_parallelism' missing")
    elif params["tensor_parallelism"] != "1":
        add(model, mdir / "config.pbtxt", "the python runtime serves with tensor_parallelism 1 only")
    if "model_dir" not in params:
        add(model, mdir / "config.pbtxt", "parameter 'model_dir' missing")
    for vdir in versions:
        if not (vdir / "model.py").is_file():
            add(model, vdir, "model.py missing")
        if "model_dir" in params and not (_resolve(vdir, params["model_dir"]) / "config.json").is_file():
            add(
                model, vdir, f"model_dir {params['model_dir']!r} does not resolve to a model directory with config.json"
            )
        if params.get("tokenizer_dir") and not _resolve(vdir, params["tokenizer_dir"]).is_dir():
            add(model, vdir, f"tokenizer_dir {params['tokenizer_dir']!r} does not exist")


def _check_trtllm(model: str, mdir: Path, config: Any, add) -> None:
    params = _params(config)
    for key in ("gpt_model_path", "gpt_model_type", "max_beam_width"):
        if not params.get(key) or params[key].startswith("${"):
            add(model, mdir / "config.pbtxt", f"parameter {key!r} missing or unfilled")
    engine = Path(params.get("gpt_model_path") or "")
    if params.get("gpt_model_path") and not params["gpt_model_path"].startswith("${"):
        if not (engine / "config.json").is_file() or not (engine / "rank0.engine").is_file():
            add(model, mdir / "config.pbtxt", f"engine path {engine} lacks config.json or rank0.engine")
        else:
            try:
                mapping = json.loads((engine / "config.json").read_text())["pretrained_config"]["mapping"]
                if int(mapping.get("tp_size", 0)) < 1:
                    raise KeyError("tp_size")
            except (ValueError, KeyError, TypeError):
                add(
                    model,
                    engine / "config.json",
                    "engine config lacks pretrained_config.mapping.tp_size (tensor parallelism)",
                )


def _check_llmapi(model: str, versions: list[Path], add) -> None:
    for vdir in versions:
        if not (vdir / "model.py").is_file():
            add(model, vdir, "model.py missing (copy it from tensorrtllm_backend all_models/llmapi)")
        path = vdir / "model.yaml"
        try:
            options = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            add(model, path, f"model.yaml unreadable: {exc}")
            continue
        for key in ("model", "tensor_parallel_size", "triton_config"):
            if key not in options:
                add(model, path, f"model.yaml lacks {key!r}")
        triton_cfg = options.get("triton_config") or {}
        for key in ("max_batch_size", "decoupled"):
            if key not in triton_cfg:
                add(model, path, f"model.yaml triton_config lacks {key!r}")


def _check_model(repo: Path, mdir: Path, add, seen: set[str]) -> None:
    model = mdir.name
    if model in seen:
        return
    seen.add(model)
    cfg_path = mdir / "config.pbtxt"
    if not cfg_path.is_file():
        add(model, cfg_path, "config.pbtxt missing")
        return
    text = cfg_path.read_text(encoding="utf-8")
    try:
        config = parse_config(text)
    except Exception as exc:  # noqa: BLE001 - protobuf raises ParseError and friends
        placeholders = sorted(set(re.findall(r"\$\{\w+\}", text)))
        add(
            model,
            cfg_path,
            f"config.pbtxt does not parse: {exc}"
            + (f" (unfilled placeholders {placeholders})" if placeholders else ""),
        )
        return
    # tensorrtllm_backend leaves optional parameters as "${...}" (= unset); anywhere else it is an error
    for placeholder in sorted(set(re.findall(r"\$\{\w+\}", _without_parameters(config)))):
        add(model, cfg_path, f"unfilled template placeholder {placeholder}")
    if config.name != model:
        add(model, cfg_path, f"name {config.name!r} differs from the directory name {model!r}")
    if not (config.backend or config.platform):
        add(model, cfg_path, "neither backend nor platform is set")
    if not re.search(r"^\s*max_batch_size\s*:", text, re.M):
        add(model, cfg_path, "max_batch_size is not set")
    versions = sorted((p for p in mdir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    if not versions:
        add(model, mdir, "no numeric version directory")
    for vdir in versions:
        if not (vdir / "config.pbtxt").is_file():
            add(model, vdir, "version directory lacks its config.pbtxt snapshot")
    on_disk = {int(v.name) for v in versions}
    for pinned in config.version_policy.specific.versions:
        if pinned not in on_disk:
            add(model, cfg_path, f"version_policy serves version {pinned}, which has no directory")
    kind = _kind(config, versions)
    if kind in ("python", "llmapi", "tensorrtllm") and not config.HasField("model_transaction_policy"):
        add(model, cfg_path, "decoupled mode (model_transaction_policy) is not declared")
    if kind == "ensemble":
        for step in config.ensemble_scheduling.step:
            if not (repo / step.model_name).is_dir():
                add(model, cfg_path, f"ensemble step model {step.model_name!r} not in the repository")
            else:
                _check_model(repo, repo / step.model_name, add, seen)
    elif kind == "tensorrtllm":
        _check_trtllm(model, mdir, config, add)
    elif kind == "llmapi":
        _check_llmapi(model, versions, add)
    elif kind == "python":
        _check_python_llm(model, mdir, versions, config, add)
    elif kind == "tokenizer":
        tok = _params(config).get("tokenizer_dir", "")
        if tok.startswith("${") or not Path(tok).is_dir():
            add(model, cfg_path, f"tokenizer_dir {tok!r} is not a directory")


def _kind(config: Any, versions: list[Path]) -> str:
    """ensemble | tensorrtllm | llmapi | python | tokenizer (pre/post-processing) | other.

    `python` is llm-demo's python-runtime LLM: its version.json says so, or it has a `model_dir`
    parameter; any other Python-backend model (a hand-written one) gets the generic checks only.
    """
    if config.platform == "ensemble":
        return "ensemble"
    if config.backend == "tensorrtllm":
        return "tensorrtllm"
    if config.backend != "python":
        return "other"
    runtimes = set()
    for vdir in versions:
        try:
            runtimes.add(json.loads((vdir / "version.json").read_text())["runtime"])
        except (OSError, ValueError, KeyError):
            pass
    if "llmapi" in runtimes or any((v / "model.yaml").exists() for v in versions):
        return "llmapi"
    if "python" in runtimes or "model_dir" in _params(config):
        return "python"
    if "tokenizer_dir" in _params(config):
        return "tokenizer"
    return "other"


def validate(repo: Path, name: str | None = None) -> list[Problem]:
    """Return every problem found (empty: valid). ``name`` limits the check to one model and its steps."""
    repo = Path(repo)
    problems: list[Problem] = []

    def add(model: str, path: Path, message: str) -> None:
        problems.append(Problem(model, str(path), message))

    if not repo.is_dir():
        return [Problem(name or "*", str(repo), "repository directory does not exist")]
    seen: set[str] = set()
    if name is not None:
        if not (repo / name).is_dir():
            return [Problem(name, str(repo / name), "model directory does not exist")]
        _check_model(repo, repo / name, add, seen)
    else:
        models = [p for p in sorted(repo.iterdir()) if p.is_dir() and not p.name.startswith(".")]
        if not models:
            add("*", repo, "repository holds no model")
        for mdir in models:
            _check_model(repo, mdir, add, seen)
    return problems


def validate_or_raise(repo: Path, name: str | None = None, events: EventLog | None = None) -> None:
    """Validate; log every problem; raise RepositoryError (exit 6) if there is any."""
    problems = validate(repo, name)
    if events is not None:
        for p in problems:
            events.emit("problem", **asdict(p))
        events.emit("validated", repository=str(repo), model=name, ok=not problems, problems=len(problems))
    if problems:
        listing = "\n  ".join(f"{p.model}: {p.message} ({p.path})" for p in problems)
        raise RepositoryError(
            f"model repository {repo} is invalid ({len(problems)} problem(s))",
            remediation=f"regenerate it with `llm-demo repo generate` or fix:\n  {listing}",
            doc=_DOC,
            details={"problems": [asdict(p) for p in problems]},
        )
