"""Atomic run-output files: readable like any other file, and never half-written."""

from __future__ import annotations

import os

import pytest

from convbert.io import atomic_path, write_json_atomic, write_text_atomic


def test_atomic_files_honour_the_umask_and_survive_a_failed_write(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_json_atomic(tmp_path / "results.json", {"score": float("nan")})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # others may read results and checkpoints (mkstemp gave 0600)
    assert path.read_text() == '{\n  "score": null\n}\n'
    write_text_atomic(path, "first\n")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert path.read_text() == "first\n" and [p.name for p in tmp_path.iterdir()] == ["results.json"]
