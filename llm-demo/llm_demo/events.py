"""Append-only JSONL stage logs: ``logs/<run>/<stage>.jsonl``.

Each line is one JSON object ``{"ts": "<ISO-8601 UTC>", "run": "<run id>", "stage": "<stage>",
"event": "<name>", ...fields}``. Every line passes through a :class:`~llm_demo.redact.Redactor`
before it is written. Stages used by the tool: ``prereq``, ``download``, ``build``, ``repository``
(part 1) and ``launch``, ``inference``, ``chat``, ``canary``, ``capacity``, ``teardown`` (part 2).

Example::

    log = EventLog(workspace, run_id, "download", redactor)
    log.emit("cache_hit", model_id="org/model", path=str(p))
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .paths import Workspace, utc_now
from .redact import Redactor


class EventLog:
    """Writer for one stage's JSONL file. Lines are appended and flushed immediately (crash-safe
    up to the last complete line). Raises ``OSError`` when the log directory is not writable."""

    def __init__(self, workspace: Workspace, run_id: str, stage: str, redactor: Redactor | None = None) -> None:
        self.run_id = run_id
        self.stage = stage
        self.redactor = redactor or Redactor()
        self.path: Path = workspace.run_dir(run_id) / f"{stage}.jsonl"

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one event line and return the (redacted) record that was written."""
        ts = utc_now()
        record: dict[str, Any] = {
            "ts": ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z",
            "run": self.run_id,
            "stage": self.stage,
            "event": event,
        }
        record.update(fields)
        record = self.redactor.redact_obj(record)
        line = json.dumps(record, sort_keys=False, default=str)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")
        return record


def read_events(path: Path) -> list[dict[str, Any]]:
    """Read all events of a JSONL file (empty list if it does not exist)."""
    if not Path(path).exists():
        return []
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
