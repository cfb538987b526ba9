"""Chat client: rolling memory within a token budget, rate limit, redacted transcripts.

Each `ChatSession.ask` builds the prompt from the remembered turns plus the new
message, dropping the oldest turns until the prompt fits `memory_budget_tokens`,
waits for the rate limiter, and sends it through `TritonTextClient` (HTTP or
gRPC, streaming when the model is decoupled).

`transcripts/<session>.jsonl` gets, all passed through the `Redactor`:

* one `session` entry first: session id, model name, model id, config hash,
  transport, budget, rate limit, `started_at`;
* one `turn` entry per exchange: user text, reply, prompt tokens, turns kept in
  context, turns dropped, TTFT and latency (s), seconds waited for the rate limit;
* one `summary` entry when the session ends (`close`, also on Ctrl-C/EOF in the CLI).

Failure mode: a failed request raises `InferenceFailed`; it is written to the
transcript as an `error` entry and the session stays usable.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .client import InferenceFailed, TritonTextClient
from .paths import Workspace, iso, utc_now
from .redact import Redactor
from .warmup import whitespace_tokens


@dataclass
class ChatSettings:
    """Token budget in tokens of `count_tokens`; rate limit in requests per minute (burst = bucket size)."""

    model: str
    max_tokens: int = 64
    memory_budget_tokens: int = 512
    rate_limit_per_min: float = 30.0
    burst: int = 3
    system_prompt: str = "You are a helpful assistant."
    model_version: str | None = None


class RateLimiter:
    """Token bucket: `burst` requests at once, refilled at `per_min` / 60 per second.

    `acquire` blocks until a request may go and returns the seconds it waited.
    `clock` and `sleep` are injectable (seconds, monotonic).
    """

    def __init__(
        self,
        per_min: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if per_min <= 0 or burst < 1:
            raise ValueError("rate limit must be > 0 per minute with a burst of at least 1")
        self.rate_per_s = per_min / 60.0
        self.capacity = float(burst)
        self.tokens = float(burst)
        self.clock, self.sleep = clock, sleep
        self.last = clock()

    def acquire(self) -> float:
        waited = 0.0
        while True:
            now = self.clock()
            self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate_per_s)
            self.last = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return waited
            pause = (1.0 - self.tokens) / self.rate_per_s
            self.sleep(pause)
            waited += pause


@dataclass
class Turn:
    user: str
    assistant: str


@dataclass
class ChatSession:
    """One conversation; see the module docstring. Call `close` when done."""

    workspace: Workspace
    client: TritonTextClient
    settings: ChatSettings
    redactor: Redactor = field(default_factory=Redactor)
    model_id: str | None = None
    config_hash: str | None = None
    count_tokens: Callable[[str], int] = whitespace_tokens
    limiter: RateLimiter | None = None
    session_id: str = field(default_factory=lambda: utc_now().strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3))

    def __post_init__(self) -> None:
        self.memory: list[Turn] = []
        self.turns = 0
        self.errors = 0
        self.dropped_total = 0
        self.tokens_out = 0
        self.closed = False
        self.started = time.monotonic()
        self.limiter = self.limiter or RateLimiter(self.settings.rate_limit_per_min, self.settings.burst)
        self.workspace.transcripts_dir.mkdir(parents=True, exist_ok=True)
        self.path: Path = self.workspace.transcripts_dir / f"{self.session_id}.jsonl"
        self._write(
            {
                "type": "session",
                "session": self.session_id,
                "model": self.settings.model,
                "model_version": self.settings.model_version,
                "model_id": self.model_id,
                "config_hash": self.config_hash,
                "transport": self.client.transport,
                "memory_budget_tokens": self.settings.memory_budget_tokens,
                "rate_limit_per_min": self.settings.rate_limit_per_min,
                "started_at": iso(utc_now()),
            }
        )

    def _write(self, entry: dict) -> None:
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(self.redactor.redact_obj(entry)) + "\n")

    def build_prompt(self, message: str) -> tuple[str, int, int]:
        """Prompt for `message` within the budget: (prompt, prompt tokens, turns dropped).

        The oldest turns go first; the system prompt and the new message always stay.
        """

        def render(turns: list[Turn]) -> str:
            lines = [self.settings.system_prompt] if self.settings.system_prompt else []
            for t in turns:
                lines += [f"User: {t.user}", f"Assistant: {t.assistant}"]
            return "\n".join(lines + [f"User: {message}", "Assistant:"])

        kept = list(self.memory)
        prompt = render(kept)
        while kept and self.count_tokens(prompt) > self.settings.memory_budget_tokens:
            kept.pop(0)
            prompt = render(kept)
        dropped = len(self.memory) - len(kept)
        self.memory = kept
        return prompt, self.count_tokens(prompt), dropped

    def ask(self, message: str) -> str:
        """Send one user message; return the reply (raises `InferenceFailed`)."""
        prompt, prompt_tokens, dropped = self.build_prompt(message)
        self.dropped_total += dropped
        waited = self.limiter.acquire()
        try:
            gen = self.client.generate(
                self.settings.model, prompt, self.settings.max_tokens, version=self.settings.model_version
            )
        except InferenceFailed as exc:
            self.errors += 1
            self._write({"type": "error", "ts": iso(utc_now()), "user": message, "error": str(exc)})
            raise
        reply = gen.text.strip()
        self.memory.append(Turn(message, reply))
        self.turns += 1
        self.tokens_out += self.count_tokens(reply)
        self._write(
            {
                "type": "turn",
                "n": self.turns,
                "ts": iso(utc_now()),
                "user": message,
                "assistant": reply,
                "prompt_tokens": prompt_tokens,
                "turns_in_context": len(self.memory) - 1,
                "turns_dropped": dropped,
                "ttft_s": gen.ttft_s,
                "latency_s": gen.latency_s,
                "rate_limit_wait_s": waited,
                "streamed": gen.streamed,
            }
        )
        return reply

    def close(self, reason: str = "user_exit") -> None:
        """Write the summary entry once."""
        if self.closed:
            return
        self.closed = True
        self._write(
            {
                "type": "summary",
                "session": self.session_id,
                "ended_at": iso(utc_now()),
                "reason": reason,
                "turns": self.turns,
                "errors": self.errors,
                "turns_dropped_from_memory": self.dropped_total,
                "output_tokens": self.tokens_out,
                "duration_s": round(time.monotonic() - self.started, 3),
            }
        )
