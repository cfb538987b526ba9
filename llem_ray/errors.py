"""Error hierarchy of llem_ray (CLI-13) and the exit codes the CLI maps them to (CLI-12).

Exit codes: 0 success, 1 runtime error (`BackendError`, `PreFlightError`, `ExperimentError`,
`StudyError`, or any other failure, with its cause), 2 usage or configuration error (`ConfigError`),
130 interrupted by SIGINT, 143 stopped by SIGTERM (`Terminated`; 128 + 15, as a shell reports it).

Every `LLEMError` pickles with all its fields (Ray carries an experiment's exception to the driver
that way), and says with `retryable` whether another attempt of the same experiment could succeed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


def _rebuild(cls: type[LLEMError], args: tuple[Any, ...], state: dict[str, Any]) -> LLEMError:
    """Unpickle an LLEMError without calling its `__init__` (whose signature may differ from `args`)."""
    exc = cls.__new__(cls, *args)
    exc.args = args
    exc.__dict__.update(state)
    return exc


class LLEMError(Exception):
    """Base of every error llem_ray raises on purpose; `exit_code` is what the CLI exits with."""

    exit_code: int = EXIT_ERROR
    retryable: bool = True
    """False when no retry of the same experiment can succeed (a configuration or pre-flight problem)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (type(self), self.args, dict(self.__dict__))


class ConfigError(LLEMError):
    """Invalid configuration: bad YAML, unknown field, invalid value. Message names file and field."""

    exit_code = EXIT_CONFIG
    retryable = False


class BackendError(LLEMError):
    """An inference backend failed to load, generate or shut down."""


class PreFlightError(LLEMError):
    """One or more pre-flight checks failed (CM-30): every failure is listed at once in `failures`.

    `str()` is one line (what a manifest records); the CLI prints one line per failure.
    """

    retryable = False

    def __init__(self, failures: list[str]):
        self.failures = [" ".join(str(f).split()) for f in failures]
        super().__init__(f"pre-flight failed ({len(self.failures)} problem(s)): {'; '.join(self.failures)}")


class ExperimentError(LLEMError):
    """An experiment could not complete (timeout, crash, invalid measurement)."""


class StudyError(LLEMError):
    """A study could not run or complete (cluster unavailable, circuit breaker tripped, bad resume dir)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (the CLI's handler raises it; exit code EXIT_TERMINATED).

    A KeyboardInterrupt, so every clean-up that an interrupt gets (running entries back to pending,
    the backend unloaded) runs for it too.
    """


def add_note(exc: BaseException, text: str) -> None:
    """Attach `text` to `exc` as a PEP 678 note (`__notes__`): the CLI prints notes after the cause."""
    exc.__notes__ = [*getattr(exc, "__notes__", []), text]


def clean_up(steps: Iterable[Callable[[], object]], *, first: BaseException | None) -> None:
    """Run every clean-up step, whatever the others do, so that the first cause stays first.

    After a failure (`first`, the exception in flight) an error in a step becomes a note on `first`
    (`add_note`) and is dropped. Without one, the first such error is raised once every step has run.
    """
    failed: Exception | None = None
    for step in steps:
        try:
            step()
        except Exception as exc:
            failed = failed or exc
            if first is not None:
                name = getattr(step, "__qualname__", None) or getattr(getattr(step, "func", None), "__qualname__", "")
                add_note(first, f"also, while cleaning up ({name}): {type(exc).__name__}: {exc}")
    if failed is not None and first is None:
        raise failed
