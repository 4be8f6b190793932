"""convbert/io.py: atomic writes of every kind, file digests, JSON reads whose errors name the file."""

from __future__ import annotations

import hashlib

import pytest

from convbert.data.config import DataError
from convbert.io import read_json, sha256_file, sha256_prefix, write_bytes_atomic, write_json_atomic
from convbert.report.writers import write_atomic


def test_bytes_and_text_writes_replace_whole_files(tmp_path):
    path = write_bytes_atomic(tmp_path / "sub" / "w.bin", b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    write_atomic(path, "text é\n")  # the report writer's str | bytes front end
    assert path.read_bytes() == "text é\n".encode()
    with pytest.raises(TypeError):
        write_bytes_atomic(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_text(encoding="utf-8") == "text é\n" and [p.name for p in path.parent.iterdir()] == ["w.bin"]


def test_digests_match_hashlib_for_multi_block_files(tmp_path):
    data = bytes(range(256)) * 9000  # > 1 MiB: several read blocks
    path = write_bytes_atomic(tmp_path / "big.bin", data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    assert sha256_prefix(path) == sha256_prefix(data) == hashlib.sha256(data).hexdigest()[:12]
    assert len(sha256_prefix(data, n=8)) == 8


def test_read_json_names_the_file_and_the_spot(tmp_path):
    good = write_json_atomic(tmp_path / "good.json", {"a": [1, float("inf")]})
    assert read_json(good) == {"a": [1, None]}
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "a": 1,,\n}')
    with pytest.raises(DataError, match=r"bad\.json: invalid JSON at line 2 column 10"):
        read_json(bad, DataError)
    with pytest.raises(ValueError, match=r"missing\.json: no such file"):
        read_json(tmp_path / "missing.json")
    (tmp_path / "latin.json").write_bytes(b'{"a": "\xe9"}')
    with pytest.raises(ValueError, match=r"latin\.json: not UTF-8 text"):
        read_json(tmp_path / "latin.json")
    with pytest.raises(ValueError, match="cannot read"):
        read_json(tmp_path)  # a directory
