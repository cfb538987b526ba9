"""What an entry point prints and exits with when its work fails (issue 18): one home for both CLIs.

`llem` (cli.py) and `python -m llem_ray.study` (study.py) run their work through `run_guarded`:
- `ConfigError`, pydantic `ValidationError`: exit 2, one line per problem, naming the file and field;
- `PreFlightError`: exit 1, one line per failure;
- any other `LLEMError`: its `exit_code`, each line of its message on a line of its own;
- SIGINT (`KeyboardInterrupt`): 130; SIGTERM: 143 (turned into `Terminated` while the work runs, so
  the same clean-up runs as for Ctrl-C: running entries go back to pending);
- anything else (an OSError such as a full disk, RecursionError, MemoryError...): exit 1 and
  `TypeName: message` on one line; `verbose` adds the traceback.
Nothing else reaches the terminal: no traceback unless asked, and control characters (NUL, escape
sequences) in a message are shown as escapes. Imports nothing heavy (no Ray), so a configuration
error is reported in milliseconds.
"""

from __future__ import annotations

import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from llem_ray.config.guards import control_characters
from llem_ray.errors import (
    EXIT_CONFIG,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    LLEMError,
    PreFlightError,
    Terminated,
)

MAX_LINE_CHARS = 2_000
"""Longest line printed for one failure."""


def terminal_safe(text: str) -> str:
    """`text` on one line with control and format characters escaped (`\\x1b`, `\\x00`), cut to MAX_LINE_CHARS."""
    line = " ".join(str(text).split())
    if control_characters(line):
        line = "".join(repr(c)[1:-1] if control_characters(c) else c for c in line)
    return line[:MAX_LINE_CHARS]


def error_lines(exc: BaseException) -> list[str]:
    """What to print for `exc`: one line per problem, the cause first (see module docstring)."""
    from pydantic import ValidationError

    if isinstance(exc, PreFlightError):
        return [f"pre-flight: {failure}" for failure in exc.failures] or [str(exc)]
    if isinstance(exc, ValidationError):
        from llem_ray.config.loader import format_validation_error

        return format_validation_error(exc, exc.title).splitlines()
    if isinstance(exc, LLEMError):
        return [line for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
    return [f"{type(exc).__name__}: {exc}"]


def exit_code(exc: Exception) -> int:
    """The documented exit code for a failure (llem_ray.errors); SIGINT and SIGTERM are `run_guarded`'s."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return EXIT_CONFIG
    return exc.exit_code if isinstance(exc, LLEMError) else EXIT_ERROR


class _SigtermSeen:
    """Whether SIGTERM arrived. Ray's `ray.get`/`ray.wait` turn an exception raised by a signal
    handler into their own KeyboardInterrupt, so the exception type alone cannot tell SIGTERM from
    Ctrl-C."""

    def __init__(self) -> None:
        self.seen = False

    def __call__(self, signum: int, frame: object) -> None:
        self.seen = True
        raise Terminated(f"signal {signum}")


@contextmanager
def sigterm_raises() -> Iterator[_SigtermSeen]:
    """While inside, SIGTERM raises `Terminated` in the main thread (elsewhere: no change); yields
    what tells whether it arrived."""
    handler = _SigtermSeen()
    if threading.current_thread() is not threading.main_thread():
        yield handler
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield handler
    finally:
        signal.signal(signal.SIGTERM, previous)


def _say(prefix: str, lines: list[str]) -> None:
    for line in lines:
        print(f"{prefix} {terminal_safe(line)}", file=sys.stderr)


def run_guarded(action: Callable[[], int | None], *, prefix: str, verbose: bool = False, resume_hint: str = "") -> int:
    """Run `action`; return its exit code (None = 0), or print why it failed and return the documented code.

    `prefix` starts every line on stderr (`error:`, `llem:`); `resume_hint` follows the line printed
    on SIGINT or SIGTERM. The cause comes first; notes on it (`__notes__`: what also failed while
    stopping) follow, one line each.
    """
    sigterm = _SigtermSeen()
    try:
        with sigterm_raises() as sigterm:
            code = action()
    except KeyboardInterrupt as exc:  # Terminated included
        terminated = sigterm.seen or isinstance(exc, Terminated)
        what = "terminated (SIGTERM)" if terminated else "interrupted"
        _say(prefix, [f"{what}{'; ' + resume_hint if resume_hint else ''}", *getattr(exc, "__notes__", [])])
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except Exception as exc:
        if verbose and not isinstance(exc, LLEMError):
            traceback.print_exc()
        _say(prefix, [*error_lines(exc), *getattr(exc, "__notes__", [])])
        return exit_code(exc)
    return EXIT_OK if code is None else code
