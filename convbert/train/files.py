"""Atomic text/JSON files for run outputs (results.json, summaries): a crash never leaves a half-written file."""

from __future__ import annotations

import contextlib
import json
import math
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def json_clean(v: Any) -> Any:
    """NaN/inf -> None so results.json stays strict JSON; numpy scalars -> Python."""
    if isinstance(v, dict):
        return {k: json_clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_clean(x) for x in v]
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


@contextlib.contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """A fresh temporary path beside `dest` to write; it replaces `dest` when the block succeeds, so a crash
    never leaves a half-written file. Created like any file (the umask applies; mkstemp would make it 0600)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="\n")
    return Path(path)


def write_json_atomic(path: str | Path, data: dict[str, Any]) -> Path:
    return write_text_atomic(path, json.dumps(json_clean(data), indent=2, allow_nan=False) + "\n")
