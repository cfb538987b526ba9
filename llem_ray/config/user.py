"""Machine-local user configuration (CFG-21..25).

File: `~/.config/llenergymeasure/config.yaml` (the platformdirs user config dir; `LLEM_CONFIG_PATH`
points elsewhere). A missing file means all defaults (CFG-22). Environment variables win over the
file: `LLEM_RUNNER_<BACKEND>`, `LLEM_CARBON_INTENSITY` (gCO2e/kWh), `LLEM_DATACENTER_PUE`,
`LLEM_NO_PROMPT`. An invalid file or value is a ConfigError naming the file or variable.

Sections (CFG-23): `output.results_dir` is where `llem run` writes results and studies unless the
command line or the config file says otherwise; `runners.<backend>` is `local` (the default) or
`docker:<image>`: that backend's experiments then run in the container image, through the study's
Ray runtime_env (`image_uri`, which Ray starts with podman on each node; the image needs Ray and
llem_ray); `measurement` holds the facility figures; `execution` the machine's default gaps.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import platformdirs
from pydantic import Field, ValidationError, field_validator

from llem_ray.backends import registry as backend_registry
from llem_ray.config.limits import MAX_GAP_S, StrictModel
from llem_ray.errors import ConfigError

APP_NAME = "llenergymeasure"
LOCAL_RUNNER = "local"
DOCKER_PREFIX = "docker:"


def check_runner(value: str) -> str:
    """`value` if it is a runner (`local` or `docker:<image>`); ValueError saying what is allowed."""
    if value == LOCAL_RUNNER or (value.startswith(DOCKER_PREFIX) and value[len(DOCKER_PREFIX) :].strip()):
        return value
    if value == "docker":
        raise ValueError("name the image: 'docker:<image>' (llem_ray ships no images of its own)")
    raise ValueError(f"expected 'local' or 'docker:<image>', got {value!r}")


class OutputSection(StrictModel):
    results_dir: str = Field(
        "results", description="Where `llem run` writes results and studies (relative: to the working directory)."
    )


class MeasurementSection(StrictModel):
    carbon_intensity_g_per_kwh: float | None = Field(None, ge=0, description="Grid carbon intensity, gCO2e/kWh.")
    datacenter_pue: float | None = Field(None, ge=1, description="Power usage effectiveness of the facility.")


class ExecutionSection(StrictModel):
    config_gap_seconds: float | None = Field(
        None, ge=0, le=MAX_GAP_S, description="Machine default gap between experiments, s."
    )
    cycle_gap_seconds: float | None = Field(
        None, ge=0, le=MAX_GAP_S, description="Machine default gap between cycles, s."
    )


class UserConfig(StrictModel):
    output: OutputSection = Field(default_factory=OutputSection)
    runners: dict[str, str] = Field(
        default_factory=dict, description="backend (pytorch, vllm, tensorrt) -> 'local' or 'docker:<image>' (CFG-24)"
    )
    measurement: MeasurementSection = Field(default_factory=MeasurementSection)
    execution: ExecutionSection = Field(default_factory=ExecutionSection)

    @field_validator("runners")
    @classmethod
    def _runners_are_known(cls, value: dict[str, str]) -> dict[str, str]:
        known = backend_registry.names()
        for backend, runner in value.items():
            if backend not in known:
                raise ValueError(f"unknown backend {backend!r} (known: {', '.join(known)})")
            check_runner(runner)
        return value


def user_config_path() -> Path:
    """Where the user config is read from."""
    override = os.environ.get("LLEM_CONFIG_PATH")
    return Path(override) if override else Path(platformdirs.user_config_dir(APP_NAME)) / "config.yaml"


def load_user_config() -> UserConfig:
    """The user config, defaults where the file is missing. Raises ConfigError if the file is invalid."""
    from llem_ray.config.loader import format_validation_error, read_yaml

    path = user_config_path()
    if not path.exists():
        return UserConfig()
    try:
        return UserConfig.model_validate(read_yaml(path))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path))) from exc


def runner_for(backend: str, user: UserConfig | None = None) -> str:
    """Runner of `backend`: env `LLEM_RUNNER_<BACKEND>`, then the user config, then 'local' (CFG-24).

    Raises ConfigError naming the variable when the environment variable is not a runner.
    """
    name = f"LLEM_RUNNER_{backend.upper()}"
    env = os.environ.get(name)
    if env:
        try:
            return check_runner(env)
        except ValueError as exc:
            raise ConfigError(f"environment variable {name}={env!r}: {exc}") from None
    return (user or load_user_config()).runners.get(backend, LOCAL_RUNNER)


def runner_image(backend: str, user: UserConfig | None = None) -> str | None:
    """The container image `backend` runs in (`docker:<image>` runner), or None to run it locally."""
    runner = runner_for(backend, user)
    return runner[len(DOCKER_PREFIX) :].strip() if runner.startswith(DOCKER_PREFIX) else None


def _env_float(name: str, minimum: float) -> float | None:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return None
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"environment variable {name}={raw!r}: not a number") from exc
    if not math.isfinite(value) or value < minimum:
        raise ConfigError(f"environment variable {name}={raw!r}: must be a finite number >= {minimum}")
    return value


def carbon_intensity_g_per_kwh(user: UserConfig | None = None) -> float | None:
    """Grid carbon intensity, gCO2e/kWh: `LLEM_CARBON_INTENSITY`, else user config, else None."""
    value = _env_float("LLEM_CARBON_INTENSITY", 0.0)
    return value if value is not None else (user or load_user_config()).measurement.carbon_intensity_g_per_kwh


def datacenter_pue(user: UserConfig | None = None) -> float | None:
    """Facility PUE: `LLEM_DATACENTER_PUE`, else user config, else None."""
    value = _env_float("LLEM_DATACENTER_PUE", 1.0)
    return value if value is not None else (user or load_user_config()).measurement.datacenter_pue


def no_prompt() -> bool:
    """True when `LLEM_NO_PROMPT` is set to a truthy value: never ask interactive questions."""
    return os.environ.get("LLEM_NO_PROMPT", "").lower() in {"1", "true", "yes"}
