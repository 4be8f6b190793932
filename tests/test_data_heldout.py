"""The held-out split of the prepare stage, and damaged inputs that name themselves (shards, vocab files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from convbert.data import DataError, PretrainDataset, prepare, read_manifest
from convbert.data.shards import data_path, is_heldout
from convbert.data.tokenizer import read_vocab_txt

PYDOCS = {"name": "pydocs", "source": "pydocs", "max_bytes": 150_000}
WORDPIECE = {"kind": "wordpiece", "vocab_size": 600}


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the same corpus without and with a 20% held-out part)."""
    data_dir = tmp_path_factory.mktemp("data")
    whole = prepare(PYDOCS, WORDPIECE, max_seq_length=64, num_workers=1, data_dir=data_dir, progress=False,
                    heldout_fraction=0.0)
    held = prepare(PYDOCS, WORDPIECE, max_seq_length=64, num_workers=1, data_dir=data_dir, progress=False,
                   heldout_fraction=0.2)
    return whole, held


def test_heldout_part_is_recorded_keyed_and_disjoint_by_document(split) -> None:
    whole, held = split
    assert whole != held  # the fraction is part of the cache key
    assert data_path(PYDOCS, WORDPIECE, 64, data_dir=held.parent, heldout_fraction=0.2) == held
    m, w = read_manifest(held), read_manifest(whole)
    part = m["heldout"]
    assert w["heldout"] is None and part["fraction"] == 0.2
    assert part["counts"]["documents"] > 0 and m["counts"]["documents"] > 0
    assert part["counts"]["documents"] + m["counts"]["documents"] == w["counts"]["documents"]
    assert part["counts"]["bytes"] + m["counts"]["bytes"] == w["counts"]["bytes"]
    assert 0.05 < part["counts"]["documents"] / w["counts"]["documents"] < 0.4
    train, heldout = PretrainDataset(held), PretrainDataset(held, split="heldout")
    assert len(heldout) == part["counts"]["examples"] and len(train) == m["counts"]["examples"]
    seen = {tuple(train[i]["input_ids"].tolist()) for i in range(len(train))}
    shared = sum(tuple(heldout[i]["input_ids"].tolist()) in seen for i in range(len(heldout)))
    assert shared <= len(heldout) // 10  # only short boilerplate examples that several documents repeat
    with pytest.raises(DataError, match="no held-out examples"):
        PretrainDataset(whole, split="heldout")


def test_selection_depends_on_the_document_alone() -> None:
    docs = [[f"document {i} line one", "line two"] for i in range(2000)]
    chosen = [is_heldout(d, 0.1) for d in docs]
    assert chosen == [is_heldout(d, 0.1) for d in docs] and 150 < sum(chosen) < 250
    assert not any(is_heldout(d, 0.0) for d in docs)
    assert all(is_heldout(d, 0.2) for d, c in zip(docs, chosen, strict=True) if c)  # nested as the fraction grows


def test_overwritten_shard_bytes_name_the_file_and_offset(split, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "damaged"
    shutil.copytree(split[1], copy)
    ds = PretrainDataset(copy)
    shard = copy / "shard-00000.bin"
    tokens = np.memmap(shard, dtype=np.uint16, mode="r+")
    row = ds.index[5]
    tokens[row[1] + 3] = 65535  # same size, bad content
    tokens.flush()
    del tokens
    ds = PretrainDataset(copy)  # sizes still match the manifest: caught as the batch is built
    with pytest.raises(DataError, match=rf"{shard}: token id 65535 at token offset {row[1] + 3} .*outside the "
                                        r"vocabulary of 600"):
        ds.gather(np.array([4, 5]))


@pytest.mark.parametrize(("content", "message"), [
    (b"[PAD],0\n[UNK],1\n[CLS],2\n[SEP],3\n[MASK],4\n", "look like 'token,id' table rows"),
    (b"token\tid\n[PAD]\t0\n[UNK]\t1\n[CLS]\t2\n", "look like 'token,id' table rows"),
    (bytes(range(256)) * 4, "not UTF-8 text"),
    (b"[PAD]\n\x00\x01\n", "NUL bytes"),
    (b"[PAD]\nhello world\n", "line 2: 'hello world' holds whitespace"),
])
def test_vocab_in_the_wrong_format_names_the_file_and_the_format(tmp_path: Path, content: bytes, message: str):
    path = tmp_path / "vocab.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as e:
        read_vocab_txt(path)
    assert str(path) in str(e.value) and "one token per line" in str(e.value)


def test_cut_short_safetensors_names_its_path(tmp_path: Path) -> None:
    from convbert.config import ConvBertConfig
    from convbert.model import ConvBertModel

    model = ConvBertModel(ConvBertConfig.from_preset("tiny", vocab_size=100, num_hidden_layers=1))
    model.to_hf(tmp_path / "hf")
    weights = tmp_path / "hf" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match=rf"{weights}: cannot read it as safetensors .*damaged or incomplete"):
        ConvBertModel.from_hf(tmp_path / "hf")
