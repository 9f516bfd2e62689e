"""Datasets for offline evaluation: the shipped GSM8K test split, or a JSONL / CSV file.

Every item gets a stable id, so a run name can continue where it stopped and a re-run of an
item overwrites its result: GSM8K items are numbered by their line, file items by a hash of
their input (rows may be reordered or added without changing the others' ids).
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from feedback.store import Store

GSM8K = "gsm8k"
GSM8K_FILE = Path(__file__).resolve().parent / "data" / "gsm8k" / "test.jsonl"


class DatasetError(ValueError):
    """The dataset cannot be read; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Item:
    id: str
    input: str
    expected: str
    metadata: dict[str, Any] = field(default_factory=dict)


def load_dataset(
    spec: str,
    *,
    input_field: str = "input",
    expected_field: str = "expected_output",
    store: Store | None = None,
) -> tuple[str, list[Item]]:
    """(dataset name, items) for "gsm8k", a path to a .jsonl / .csv file, or a dataset kept in
    the store (python -m evals dataset from-traces)."""
    if spec == GSM8K:
        rows = _jsonl(GSM8K_FILE)
        return GSM8K, [
            Item(f"gsm8k-{n:04d}", row["question"], row["answer"], {"line": n}) for n, row in enumerate(rows)
        ]
    path = Path(spec)
    if not path.is_file():
        if store is not None:
            if stored := stored_items(store, spec):
                return spec, stored
        raise DatasetError(
            f"No dataset {spec!r}: give gsm8k, the path of a .jsonl or .csv file, or the name of a "
            "dataset made by from-traces (python -m evals dataset list)."
        )
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    elif path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = _jsonl(path)
    else:
        raise DatasetError(f"{path}: a dataset is a .jsonl or .csv file.")
    items = []
    for n, row in enumerate(rows, start=1):
        missing = [name for name in (input_field, expected_field) if name not in row]
        if missing:
            raise DatasetError(
                f"{path}, row {n}: no field {', '.join(repr(m) for m in missing)} (it has {', '.join(row)}); "
                "name the fields with --input-field and --expected-field."
            )
        text = str(row[input_field])
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        extra = {k: v for k, v in row.items() if k not in (input_field, expected_field)}
        items.append(Item(f"{path.stem}-{digest}", text, str(row[expected_field]), extra))
    return path.stem, items


def _jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as exc:
            raise DatasetError(f"{path}, line {n}: not JSON ({exc}).") from None
    return rows


def stored_items(store: Store, dataset: str) -> list[Item]:
    """A dataset kept in the store, oldest item first (empty when there is none of that name)."""
    rows = store.rows(
        "SELECT * FROM dataset_items WHERE dataset = :d ORDER BY created, item_id", {"d": dataset}
    )
    return [
        Item(r["item_id"], r["input"], r["expected"] or "", json.loads(r["metadata"] or "{}")) for r in rows
    ]


def stored_datasets(store: Store) -> list[dict[str, Any]]:
    return store.rows(
        "SELECT dataset, COUNT(*) AS items, MAX(created) AS updated FROM dataset_items GROUP BY dataset"
        " ORDER BY MAX(created) DESC"
    )
