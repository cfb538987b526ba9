"""Part-2 settings: `config/serving.yaml` (serve, warmup, chat, canary, capacity, retention).

`load_serving(workspace, path=None)` reads `path`, else the workspace's
`config/serving.yaml`, else the shipped one, and fills every missing key with
the shipped default, so a partial file works. Values keep their YAML types;
units are in the key names (`_s` seconds, `_ms` milliseconds).
Failure mode: unreadable YAML, a non-mapping section or an unknown key raises
`ConfigError` (exit 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .paths import PACKAGE_ROOT, Workspace
from .triton import ServeOptions, TlsOptions

_DOC = "docs/usage.md#serving-configuration"
SHIPPED = PACKAGE_ROOT / "config" / "serving.yaml"


def _read(path: Path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}", doc=_DOC) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping", doc=_DOC)
    return data


def _merge(defaults: dict, given: dict, where: str) -> dict:
    out = dict(defaults)
    for key, value in given.items():
        if key not in defaults:
            raise ConfigError(f"unknown key {where}{key} in serving config", doc=_DOC)
        if isinstance(defaults[key], dict) and value is not None:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}{key} must be a mapping", doc=_DOC)
            out[key] = _merge(defaults[key], value, f"{where}{key}.")
        else:
            out[key] = value
    return out


def load_serving(workspace: Workspace, path: Path | None = None) -> dict[str, Any]:
    """The merged settings (see module docstring)."""
    defaults = _read(SHIPPED)
    chosen = path or workspace.config_file("serving.yaml")
    return defaults if Path(chosen) == SHIPPED else _merge(defaults, _read(chosen), "")


def serve_options(settings: dict, model_repository: Path, overrides: dict[str, Any]) -> ServeOptions:
    """ServeOptions from the `serve` section, with non-None CLI `overrides` on top."""
    s = {**settings["serve"], **{k: v for k, v in overrides.items() if v is not None}}
    tls_cfg = s["grpc_tls"]
    tls = None
    if tls_cfg.get("enabled"):
        if not tls_cfg.get("cert") or not tls_cfg.get("key"):
            raise ConfigError("serve.grpc_tls.enabled needs cert and key paths", doc="docs/usage.md#tls")
        tls = TlsOptions(
            cert=Path(tls_cfg["cert"]).expanduser(),
            key=Path(tls_cfg["key"]).expanduser(),
            root_cert=Path(tls_cfg["root_cert"]).expanduser() if tls_cfg.get("root_cert") else None,
            mutual=bool(tls_cfg.get("mutual")),
        )
    return ServeOptions(
        model_repository=model_repository,
        http_address=s["http_address"],
        http_port=int(s["http_port"]),
        grpc_address=s["grpc_address"],
        grpc_port=int(s["grpc_port"]),
        metrics_address=s["metrics_address"],
        metrics_port=int(s["metrics_port"]),
        exit_timeout_s=int(s["exit_timeout_s"]),
        tls=tls,
        max_lifetime_s=s["max_lifetime_s"],
    )
