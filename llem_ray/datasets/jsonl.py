"""Prompt files: JSONL (one JSON object per line), or Parquet / CSV tables as found in hub datasets.

The prompt field is `text_field` if given, else the first of TEXT_FIELDS a row has. Rows without
it (e.g. a provenance header line such as `{"_provenance": …}`) are skipped. A group field (one of
GROUP_FIELDS, e.g. the source corpus) is kept for the `grouped` and `interleaved` orders.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

TEXT_FIELDS: tuple[str, ...] = ("prompt", "text", "input", "question", "instruction", "content")
GROUP_FIELDS: tuple[str, ...] = ("source", "category", "subset", "dataset", "task")


@dataclass(frozen=True)
class TextRow:
    """One prompt text and its group (None when the file has no group field)."""

    text: str
    group: str | None


def _rows(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".csv"):
        import pyarrow.csv
        import pyarrow.parquet

        table = pyarrow.parquet.read_table(path) if suffix == ".parquet" else pyarrow.csv.read_csv(path)
        return table.to_pylist()
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None
    return rows


def read_text_rows(path: Path, text_field: str | None = None) -> list[TextRow]:
    """Prompt rows of `path`, in file order. Raises ValueError when no row has a prompt field."""
    out = []
    for row in _rows(path):
        if not isinstance(row, dict):
            continue
        field = text_field or next((f for f in TEXT_FIELDS if isinstance(row.get(f), str)), None)
        text = row.get(field) if field else None
        if isinstance(text, str) and text:
            group = next((str(row[g]) for g in GROUP_FIELDS if row.get(g) is not None), None)
            out.append(TextRow(text, group))
    if not out:
        wanted = text_field or " / ".join(TEXT_FIELDS)
        raise ValueError(f"{path}: no row has a text field '{wanted}' (set dataset.text_field)")
    return out
