"""prepare(): sources, tokenizers, shards + manifest, caching, atomicity and bad input."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import start_process

from convbert import data as convbert_data
from convbert.data import DataError, check_compatible, check_files, load_shards_tokenizer, read_manifest


def prepare(*args: object, **kwargs: object) -> Path:
    """convbert.data.prepare over the whole corpus: these tests count it, so no held-out split unless asked."""
    kwargs.setdefault("heldout_fraction", 0.0)
    return convbert_data.prepare(*args, **kwargs)


PYDOCS = {"name": "pydocs", "source": "pydocs", "max_bytes": 600_000}  # 3 chunks: exercises the pool
WORDPIECE = {"kind": "wordpiece", "vocab_size": 1000}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("data")
    return prepare(PYDOCS, WORDPIECE, max_seq_length=64, num_workers=2, data_dir=data_dir, progress=False)


def examples(d: Path) -> list[tuple[list[int], int]]:
    m = read_manifest(d)
    shards = [np.fromfile(d / s["file"], dtype=m["dtype"]) for s in m["shards"]]
    index = np.fromfile(d / "index.bin", dtype=np.int32).reshape(-1, 4)
    return [(shards[s][o : o + n].tolist(), b) for s, o, n, b in index.tolist()]


def shard_digests(d: Path) -> dict[str, str]:
    files = read_manifest(d)["files"]
    return {k: v["sha256"] for k, v in files.items() if k != "tokenizer.json"}


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def text_corpus(*paths: Path, **extra: object) -> dict:
    return {"name": "mine", "source": "text", "paths": [str(p) for p in paths], **extra}


# ---------------------------------------------------------------------------------------- output
def test_layout_manifest_and_tokenizer(built: Path) -> None:
    assert built.name.startswith("pydocs-")
    m = check_files(built, checksums=True)
    assert m["vocab_size"] == 1000 and m["max_seq_length"] == 64 and m["dtype"] == "uint16"
    assert m["config"]["corpus"]["max_bytes"] == 600_000 and m["config"]["seed"] == 12345
    assert m["special_tokens"] == {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}
    c = m["counts"]
    assert c["documents"] > 10 and c["bytes"] >= 600_000 and c["examples"] == m["index"]["rows"]
    assert c["tokens"] == sum(s["tokens"] for s in m["shards"])
    assert c["tokens"] + c["truncated_tokens"] == c["corpus_tokens"] + 2 * c["examples"] + (
        c["examples"] - c["single_segment_examples"]
    )
    vocab = (built / "vocab.txt").read_text(encoding="utf-8").splitlines()
    tok = load_shards_tokenizer(built)
    assert len(vocab) == tok.get_vocab_size() == 1000
    assert [tok.token_to_id(t) for t in vocab[:5]] == [0, 1, 2, 3, 4]
    enc = tok.encode("Return the LENGTH of a list.")
    assert enc.tokens[0] == "[CLS]" and "length" in enc.tokens  # lowercased, BERT specials added


def test_the_whole_corpus_reaches_the_shards_and_the_manifest_says_so(built: Path, tmp_path: Path) -> None:
    """Default overflow=split: nothing is cut, even from a corpus of one long line. ELECTRA's truncation, on
    request, loses most of that line, and the build warns naming the share lost."""
    c = read_manifest(built)["counts"]
    assert c["truncated_tokens"] == 0 and c["kept_fraction"] == 1.0
    words = " ".join(f"word{i % 97} and more" for i in range(3000))  # one unit, ~9000 tokens
    line = write(tmp_path / "line.txt", words + "\n")
    one = prepare(text_corpus(line), WORDPIECE, max_seq_length=64, data_dir=tmp_path / "d", progress=False)
    m = read_manifest(one)
    assert m["counts"]["kept_fraction"] == 1.0 and m["counts"]["corpus_tokens"] > 5000
    assert m["counts"]["examples"] >= m["counts"]["corpus_tokens"] // 61
    with pytest.warns(UserWarning, match=r"the training split lost [\d,]+ of its [\d,]+ tokens \(9\d\.\d%\) to "
                                         "corpus.overflow=truncate"):
        cut = prepare(text_corpus(line, overflow="truncate"), WORDPIECE, max_seq_length=64, data_dir=tmp_path / "d",
                      progress=False)
    assert cut != one and read_manifest(cut)["counts"]["kept_fraction"] < 0.1


def test_examples_are_well_formed(built: Path) -> None:
    exs = examples(built)
    assert len(exs) == read_manifest(built)["counts"]["examples"]
    for ids, b_start in exs:
        assert 3 <= len(ids) <= 64 and ids[0] == 2 and ids[-1] == 3 and ids[b_start - 1] == 3
        assert max(ids) < 1000 and 0 not in ids and ids.count(2) == 1
    singles = sum(b == len(ids) for ids, b in exs)
    assert 0 < singles < len(exs)


def test_same_config_reuses_the_dir(built: Path) -> None:
    stamp = (built / "manifest.json").stat().st_mtime_ns
    again = prepare(PYDOCS, WORDPIECE, max_seq_length=64, num_workers=1, data_dir=built.parent, progress=False)
    assert again == built and (built / "manifest.json").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in built.parent.iterdir()) == [built.name]  # no tmp dirs left


def test_output_independent_of_workers_and_changes_with_seed(built: Path, tmp_path: Path) -> None:
    one = prepare(PYDOCS, WORDPIECE, max_seq_length=64, num_workers=0, data_dir=tmp_path, progress=False)
    assert one.name == built.name and shard_digests(one) == shard_digests(built)
    other = prepare(PYDOCS, WORDPIECE, max_seq_length=64, seed=7, num_workers=2, data_dir=tmp_path, progress=False)
    assert other != one
    assert shard_digests(other)["vocab.txt"] == shard_digests(one)["vocab.txt"]
    assert shard_digests(other)["shard-00000.bin"] != shard_digests(one)["shard-00000.bin"]


# ------------------------------------------------------------------------------------------ sources
def test_text_files_gz_and_document_boundaries(tmp_path: Path) -> None:
    a = write(tmp_path / "a.txt", "The first line.\nStill the first document.\n\nA second document.\n")
    b = tmp_path / "b.txt.gz"
    with gzip.open(b, "wt", encoding="utf-8") as f:
        f.write("Gzip text, third document.\n\n\n\nFourth document.\nend\n")
    tok = {"kind": "wordpiece", "vocab_size": 200, "min_frequency": 1}
    d = prepare(text_corpus(a, b), tok, data_dir=tmp_path / "data", progress=False)
    m = read_manifest(d)
    assert m["counts"]["documents"] == 4 and m["counts"]["units"] == 6 and m["counts"]["examples"] == 4
    decoded = [load_shards_tokenizer(d).decode(ids) for ids, _ in examples(d)]
    assert decoded[2] == "gzip text, third document."
    per_file = prepare(text_corpus(a, b, doc_boundary="file"), tok, data_dir=tmp_path / "data", progress=False)
    assert per_file != d and read_manifest(per_file)["counts"]["documents"] == 2
    # a glob and a directory naming the same files (in sorted order) give the same examples
    for spec in (str(tmp_path / "*.txt*"), str(tmp_path / "files")):
        if spec.endswith("files"):
            write(tmp_path / "files" / "a.txt", a.read_bytes())
            write(tmp_path / "files" / "b.txt.gz", b.read_bytes())
        other = prepare(text_corpus(spec), tok, data_dir=tmp_path / "data", progress=False)
        assert other != d and shard_digests(other) == shard_digests(d)


def test_line_endings_encodings_and_hidden_folders(tmp_path: Path) -> None:
    tok = {"kind": "wordpiece", "vocab_size": 200, "min_frequency": 1}
    text = "First doc line.\nSame doc.\n\nSecond doc \u00e9t\u00e9.\n"
    lf = write(tmp_path / "lf" / "a.txt", text)
    ref = read_manifest(prepare(text_corpus(lf), tok, data_dir=tmp_path / "data", progress=False))["counts"]
    assert ref["documents"] == 2 and ref["units"] == 3
    variants = {"crlf": (text.replace("\n", "\r\n").encode(), "utf-8"),
                "cr": (text.replace("\n", "\r").encode(), "utf-8"), "utf16": (text.encode("utf-16"), "utf-16")}
    for name, (data, encoding) in variants.items():
        f = write(tmp_path / name / "a.txt", data)
        counts = read_manifest(prepare(text_corpus(f, encoding=encoding), tok, data_dir=tmp_path / "data",
                                       progress=False))["counts"]
        assert (counts["documents"], counts["units"], counts["corpus_tokens"]) == (
            ref["documents"], ref["units"], ref["corpus_tokens"]), name
    # a directory's hidden folders (.git) are not corpus text, as a glob would leave them out
    write(tmp_path / "lf" / ".git" / "config", "[core]\n\trepositoryformatversion = 0\n")
    again = prepare(text_corpus(tmp_path / "lf"), tok, data_dir=tmp_path / "data", progress=False)
    assert read_manifest(again)["counts"]["units"] == 3


def test_file_without_blank_lines_is_cut_into_bounded_documents(tmp_path: Path, monkeypatch) -> None:
    import convbert.data.corpus as corpus_mod

    monkeypatch.setattr(corpus_mod, "MAX_DOCUMENT_CHARS", 100)
    f = write(tmp_path / "lines.txt", "".join(f"sentence number {i:4d}\n" for i in range(30)))  # 20 chars each
    tok = {"kind": "wordpiece", "vocab_size": 200, "min_frequency": 1}
    counts = read_manifest(prepare(text_corpus(f), tok, data_dir=tmp_path / "data", progress=False))["counts"]
    assert counts["documents"] == 6 and counts["units"] == 30


def test_pipe_with_a_trained_vocab_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="is a pipe, which can be read once"):
        prepare(text_corpus(fifo), WORDPIECE, data_dir=tmp_path / "data", progress=False)


def test_hub_source_cache_follows_its_local_files(tmp_path: Path) -> None:
    tok = {"kind": "wordpiece", "vocab_size": 200, "min_frequency": 1}
    rows = lambda n: "".join(json.dumps({"text": f"Document number {i}."}) + "\n" for i in range(n))  # noqa: E731
    f = write(tmp_path / "json" / "x.jsonl", rows(5))
    glob_files = {"dataset": "json", "data_files": str(tmp_path / "json" / "*.jsonl")}
    for source in (glob_files, {"dataset": str(tmp_path / "json")}):  # a glob, a local dataset directory
        corpus = {"name": "js", "source": "hub", "rows": "documents", "cache_dir": str(tmp_path / "hf"), **source}
        write(f, rows(5))
        first = prepare(corpus, tok, data_dir=tmp_path / "data", progress=False)
        write(f, rows(7))  # other text behind the same config: a new build, not the old one
        second = prepare(corpus, tok, data_dir=tmp_path / "data", progress=False)
        assert second != first and read_manifest(second)["counts"]["documents"] == 7, source


def test_hub_code_path_on_local_files_matches_text_source(tmp_path: Path) -> None:
    paragraphs = [
        "".join(f"Line {i} of paragraph {p} about {'spam' if i % 3 else 'eggs'}.\n" for i in range(4))
        for p in range(10)
    ]
    f = write(tmp_path / "corpus.txt", "\n".join(paragraphs))  # blank line between paragraphs
    tok = {"kind": "wordpiece", "vocab_size": 300, "min_frequency": 1}
    hub = {
        "name": "hubtext",
        "source": "hub",
        "dataset": "text",
        "data_files": str(f),
        "rows": "lines",
        "cache_dir": str(tmp_path / "hf"),
        "max_documents": 8,
    }
    via_hub = prepare(hub, tok, max_seq_length=32, data_dir=tmp_path / "data", progress=False)
    via_text = prepare(
        text_corpus(f, max_documents=8), tok, max_seq_length=32, data_dir=tmp_path / "data", progress=False
    )
    assert read_manifest(via_hub)["counts"]["documents"] == 8
    assert examples(via_hub) == examples(via_text)
    # rows=documents: one JSON record per document, its lines are units
    j = write(
        tmp_path / "docs.jsonl", "".join(json.dumps({"body": f"Doc {i}.\nSecond line {i}."}) + "\n" for i in range(5))
    )
    hub_docs = {**hub, "dataset": "json", "data_files": str(j), "rows": "documents", "text_column": "body"}
    d = prepare(hub_docs, tok, data_dir=tmp_path / "data", progress=False)
    assert read_manifest(d)["counts"]["documents"] == 5 and read_manifest(d)["counts"]["units"] == 10
    with pytest.raises(DataError, match="text_column='text' is not a column"):
        prepare({**hub_docs, "text_column": "text"}, tok, data_dir=tmp_path / "data", progress=False)


def test_pretrained_vocab_txt_and_tokenizer_json(built: Path, tmp_path: Path) -> None:
    corpus = {**PYDOCS, "max_bytes": 100_000}
    for path in (built / "vocab.txt", built / "tokenizer.json", built):
        d = prepare(
            corpus, {"kind": "pretrained", "path": str(path), "vocab_size": 1000}, data_dir=tmp_path, progress=False
        )
        assert load_shards_tokenizer(d).get_vocab() == load_shards_tokenizer(built).get_vocab()
    with pytest.raises(DataError, match="has 1000 tokens but tokenizer.vocab_size=30522"):
        prepare(
            corpus,
            {"kind": "pretrained", "path": str(built / "vocab.txt"), "vocab_size": 30522},
            data_dir=tmp_path,
            progress=False,
        )
    # a tokenizer.json saved with truncation and padding on: both are turned off, nothing is cut or padded
    from tokenizers import Tokenizer

    cut = Tokenizer.from_file(str(built / "tokenizer.json"))
    cut.enable_truncation(8)
    cut.enable_padding()
    cut.save(str(write(tmp_path / "cut" / "tokenizer.json", "")))
    d = prepare(corpus, {"kind": "pretrained", "path": str(tmp_path / "cut"), "vocab_size": 1000}, data_dir=tmp_path,
                progress=False)
    plain = prepare(corpus, {"kind": "pretrained", "path": str(built), "vocab_size": 1000}, data_dir=tmp_path,
                    progress=False)
    assert examples(d) == examples(plain)
    no_pad = write(tmp_path / "bad" / "vocab.txt", "[UNK]\n[CLS]\n[SEP]\n[MASK]\n[PAD]\nhello\n")
    with pytest.raises(DataError, match=r"\[PAD\] has id 4"):
        prepare(corpus, {"kind": "pretrained", "path": str(no_pad), "vocab_size": 6}, data_dir=tmp_path)


# ------------------------------------------------------------------------------------- bad input
def assert_nothing_left(data_dir: Path) -> None:
    assert not data_dir.exists() or list(data_dir.iterdir()) == []


def test_missing_files_and_empty_corpus(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with pytest.raises(DataError, match="does not exist"):
        prepare(text_corpus(tmp_path / "nope.txt"), WORDPIECE, data_dir=data)
    with pytest.raises(DataError, match="no file matches"):
        prepare(text_corpus(str(tmp_path / "*.md")), WORDPIECE, data_dir=data)
    blank = write(tmp_path / "blank.txt", "\n  \n\t\n")
    with pytest.raises(DataError, match=r"corpus 'mine' is empty: files \[.*blank.txt"):
        prepare(text_corpus(blank), WORDPIECE, data_dir=data, progress=False)
    assert_nothing_left(data)


def test_undecodable_bytes_fail_or_skip(tmp_path: Path) -> None:
    f = write(tmp_path / "latin.txt", b"good line\nanother good one\ncaf\xe9 au lait\nlast line\n")
    data = tmp_path / "data"
    tok = {"kind": "wordpiece", "vocab_size": 100, "min_frequency": 1}
    with pytest.raises(DataError, match=r"latin.txt line 3: cannot decode byte b'\\xe9' at column 4"):
        prepare(text_corpus(f), tok, data_dir=data, progress=False)
    assert_nothing_left(data)
    with pytest.warns(UserWarning, match="latin.txt line 3"):
        d = prepare(text_corpus(f, on_decode_error="skip"), tok, data_dir=data, progress=False)
    assert read_manifest(d)["counts"]["units"] == 3
    latin1 = prepare(text_corpus(f, encoding="latin-1"), tok, data_dir=data, progress=False)
    assert read_manifest(latin1)["counts"]["units"] == 4


def test_bad_config_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # fail fast, no retries
    with pytest.raises(DataError, match="vocab_size=3 is too small"):
        prepare(PYDOCS, {"kind": "wordpiece", "vocab_size": 3}, data_dir=tmp_path)
    with pytest.raises(DataError, match=r"vocab_size=40 is too small: .* need \d+ entries"):
        prepare({**PYDOCS, "max_bytes": 20_000}, {"vocab_size": 40}, data_dir=tmp_path, progress=False)
    with pytest.raises(DataError, match=r"unknown corpus config key\(s\) \['max_document'\]"):
        prepare({**PYDOCS, "max_document": 3}, WORDPIECE, data_dir=tmp_path)
    with pytest.raises(DataError, match="corpus.source='web' is not one of"):
        prepare({"source": "web"}, WORDPIECE, data_dir=tmp_path)
    with pytest.raises(DataError, match="max_seq_length=4"):
        prepare(PYDOCS, WORDPIECE, max_seq_length=4, data_dir=tmp_path)
    with pytest.raises(DataError, match="tokenizer.path is not set"):
        prepare(PYDOCS, {"kind": "pretrained"}, data_dir=tmp_path)
    with pytest.raises(DataError, match="could not be fetched from the hub"):
        prepare(PYDOCS, {"kind": "pretrained", "path": "no-such-org/no-such-tokenizer"}, data_dir=tmp_path)
    with pytest.raises(DataError, match="corpus.encoding='utf8x' is not an encoding Python knows"):
        prepare({**PYDOCS, "encoding": "utf8x"}, WORDPIECE, data_dir=tmp_path)
    for key, value in (("vocab_size", "abc"), ("limit_alphabet", 0), ("max_train_bytes", 0)):
        # 0s used to build shards that were mostly [UNK]
        with pytest.raises(DataError, match=f"tokenizer.{key} must be a positive integer"):
            prepare(PYDOCS, {**WORDPIECE, key: value}, data_dir=tmp_path)
    assert_nothing_left(tmp_path)


def test_corrupt_gzip_and_a_full_disk_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from convbert.data import shards

    packed = bytearray(gzip.compress(b"".join(b"line %d of some text\n" % i for i in range(2000))))
    packed[30:60] = bytes(30)  # damaged inside the deflate stream, not just cut short
    bad = write(tmp_path / "bad.txt.gz", bytes(packed))
    data = tmp_path / "data"
    with pytest.raises(DataError, match=r"bad.txt.gz: cannot read \(Error -3 while decompressing"):
        prepare(text_corpus(bad), {"vocab_size": 100, "min_frequency": 1}, data_dir=data, progress=False)
    assert_nothing_left(data)

    def full(self, f, name, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(shards._ShardWriter, "_write", full)  # the disk fills up while shards are written
    f = write(tmp_path / "ok.txt", "Some text.\nMore text.\n")
    with pytest.raises(DataError, match=r"No space left on device while building .*/mine-.*partial build was removed"):
        prepare(text_corpus(f), {"vocab_size": 100, "min_frequency": 1}, data_dir=data, progress=False)
    assert_nothing_left(data)


def test_compatibility_checks(built: Path, tmp_path: Path) -> None:
    assert check_compatible(built, 1000, max_seq_length=64)["vocab_size"] == 1000
    with pytest.raises(DataError, match="1000-token vocabulary but the model has vocab_size=30522"):
        check_compatible(built, 30522)
    with pytest.raises(DataError, match="max_seq_length=64, requested 128"):
        check_compatible(built, 1000, max_seq_length=128)
    with pytest.raises(DataError, match="does not exist"):
        read_manifest(tmp_path / "missing")
    with pytest.raises(DataError, match="not a finished data dir"):
        read_manifest(tmp_path)
    # a copy whose shard was damaged, or whose tokenizer differs from its manifest
    broken = tmp_path / "broken"
    broken.mkdir()
    for p in built.iterdir():
        (broken / p.name).write_bytes(p.read_bytes())
    (broken / "shard-00000.bin").write_bytes(b"\0\0")
    with pytest.raises(DataError, match="shard-00000.bin has 2 bytes, manifest.json says"):
        check_compatible(broken, 1000)
    (broken / "shard-00000.bin").unlink()
    with pytest.raises(DataError, match="shard-00000.bin is missing"):
        check_compatible(broken, 1000)
    (broken / "manifest.json").write_text("{")
    with pytest.raises(DataError, match=r"manifest.json: invalid JSON at line 1"):
        read_manifest(broken)
    # an existing dir for this config that is damaged is reported, not silently rebuilt
    (built / "index.bin").rename(tmp_path / "index.bin")
    try:
        with pytest.raises(DataError, match="index.bin is missing"):
            prepare(PYDOCS, WORDPIECE, max_seq_length=64, data_dir=built.parent)
    finally:
        (tmp_path / "index.bin").rename(built / "index.bin")


def test_killed_build_leaves_nothing_that_looks_finished(built: Path, tmp_path: Path) -> None:
    # the build reads a named pipe we keep open, so it is certainly mid-way when killed
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDWR)
    data = tmp_path / "data"
    vocab = {"kind": "pretrained", "path": str(built / "vocab.txt"), "vocab_size": 1000}  # a pipe is read once
    code = (
        "from convbert.data import prepare; "
        f"prepare({text_corpus(fifo)!r}, {vocab!r}, data_dir={str(data)!r}, progress=False)"
    )
    proc = start_process(["-c", code], stdout=None, stderr=None)
    try:
        os.write(fd, b"Some text that is read before the kill.\n" * 100)
        deadline = time.monotonic() + 120
        while not (data.exists() and any(data.iterdir())):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        os.close(fd)
    left = list(data.iterdir())
    assert len(left) == 1 and left[0].name.startswith(".tmp-mine-")
    assert not (left[0] / "manifest.json").exists()
    # the next build (any config) removes the dead build's leftovers
    f = write(tmp_path / "real.txt", "Real text.\nMore real text.\n")
    d = prepare(text_corpus(f), {"vocab_size": 100, "min_frequency": 1}, data_dir=data, progress=False)
    assert [p.name for p in data.iterdir()] == [d.name]


def test_checksums_match_file_contents(built: Path) -> None:
    for name, entry in read_manifest(built)["files"].items():
        assert hashlib.sha256((built / name).read_bytes()).hexdigest() == entry["sha256"]


def test_vocab_txt_and_tokenizer_json_agree_with_transformers_bert(built: Path) -> None:
    transformers = pytest.importorskip("transformers")
    slow = transformers.BertTokenizer(str(built / "vocab.txt"), do_lower_case=True)
    text = "Return the Number of items; raise KeyError if [MASK] is missing. Café naïve 日本"
    assert load_shards_tokenizer(built).encode(text).ids == slow(text)["input_ids"]
