"""Small file utilities every stage shares: atomic writes, sha256 digests, JSON reads that name the file.

Atomic writes go to a temporary file beside the destination, then `os.replace` it: a reader (or a crash)
never sees half a file, and the temporary file is removed whatever happens.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_BLOCK = 1 << 20


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


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="\n")
    return Path(path)


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Indented strict JSON (NaN/inf written as null), newline-terminated."""
    return write_text_atomic(path, json.dumps(json_clean(data), indent=2, allow_nan=False) + "\n")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (shards and weights can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def sha256_prefix(data: bytes | Path, n: int = 12) -> str:
    """The first n hex digits of the sha256 of some bytes or of a file: a short, stable id."""
    return (sha256_file(data) if isinstance(data, Path) else hashlib.sha256(data).hexdigest())[:n]


def read_json(path: str | Path, error: type[Exception] = ValueError) -> Any:
    """The parsed JSON in `path`. A missing, unreadable or malformed file raises `error` (the caller's own
    error type) with a message that starts with the file name and says where the JSON breaks."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
