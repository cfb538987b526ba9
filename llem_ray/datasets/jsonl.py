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


def _table_rows(path: Path, max_rows: int | None) -> list[dict]:
    import pyarrow.csv
    import pyarrow.parquet

    if path.suffix.lower() == ".parquet":
        if max_rows is None:
            return pyarrow.parquet.read_table(path).to_pylist()
        batch = next(pyarrow.parquet.ParquetFile(path).iter_batches(batch_size=max_rows), None)
        return batch.to_pylist() if batch is not None else []
    if max_rows is None:
        return pyarrow.csv.read_csv(path).to_pylist()
    reader = pyarrow.csv.open_csv(path)  # a malformed table raises ArrowInvalid, a ValueError
    try:
        return reader.read_next_batch().to_pylist()[:max_rows]
    except StopIteration:
        return []


def _rows(path: Path, max_rows: int | None) -> list[dict]:
    if path.suffix.lower() in (".parquet", ".csv"):
        return _table_rows(path, max_rows)
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if max_rows is not None and len(rows) >= max_rows:
                break
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None
    return rows


def read_text_rows(path: Path, text_field: str | None = None, max_rows: int | None = None) -> list[TextRow]:
    """Prompt rows of `path` in file order, from its first `max_rows` records only when given.

    Raises ValueError when no row read has a prompt field or a record does not parse (JSON lines
    name the line), OSError (UnicodeDecodeError: a ValueError) when the file cannot be read.
    """
    out = []
    for row in _rows(path, max_rows):
        if not isinstance(row, dict):
            continue
        field = text_field or next((f for f in TEXT_FIELDS if isinstance(row.get(f), str)), None)
        text = row.get(field) if field else None
        if isinstance(text, str) and text:
            group = next((str(row[g]) for g in GROUP_FIELDS if row.get(g) is not None), None)
            out.append(TextRow(text, group))
    if not out:
        wanted = text_field or " / ".join(TEXT_FIELDS)
        among = f" among the first {max_rows} records" if max_rows is not None else ""
        raise ValueError(f"{path}: no row{among} has a text field '{wanted}' (set dataset.text_field)")
    return out
