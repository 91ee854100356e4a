"""Reader of the state-dict key lists in tests/nets/data/ (key, shape, param|buffer per line, read off a reference
implementation outside the project)."""

from __future__ import annotations

from pathlib import Path


def read_key_list(path: Path) -> list[tuple[str, tuple[int, ...], str]]:
    """(key, shape, kind) per line; ``#`` lines are comments, a scalar's shape is empty."""
    rows = []
    for line in Path(path).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, shape, kind = line.split("\t")
            rows.append((key, tuple(int(s) for s in shape.split("x")) if shape else (), kind))
    return rows
