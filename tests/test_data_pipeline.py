"""A full tiny run of `python -m pipelines.prepare` (Hydra entry point) on the pydocs corpus."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import run_process

from convbert.data import PretrainDataset, ResumableBatches, check_compatible, read_manifest

pytestmark = pytest.mark.slow  # end to end through the entry point



def run_prepare(*overrides: str) -> subprocess.CompletedProcess:
    return run_process(["-m", "pipelines.prepare", *overrides], timeout=300)


def test_hydra_entry_point_tiny_pydocs_run(tmp_path: Path) -> None:
    args = (
        "corpus.max_bytes=300000",
        "tokenizer.vocab_size=800",
        "max_seq_length=48",
        "num_workers=2",
        f"data_dir={tmp_path / 'data'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    first = run_prepare(*args)
    assert first.returncode == 0, first.stderr
    (out,) = (tmp_path / "data").iterdir()
    assert out.name.startswith("pydocs-") and f"{out}: " in first.stdout
    m = check_compatible(out, 800, max_seq_length=48)
    assert m["config"]["corpus"]["max_bytes"] == 300_000 and m["config"]["tokenizer"]["kind"] == "wordpiece"
    assert m["counts"]["examples"] > 100
    assert (tmp_path / "run" / ".hydra" / "config.yaml").is_file()
    batch = next(ResumableBatches(PretrainDataset(out), batch_size=4, seed=0))
    assert batch["input_ids"].shape == (4, 48)
    # the same config again reuses the finished directory
    stamp = (out / "manifest.json").stat().st_mtime_ns
    second = run_prepare(*args)
    assert second.returncode == 0, second.stderr
    assert f"{out}: " in second.stdout and (out / "manifest.json").stat().st_mtime_ns == stamp
    # bad input fails with the message and leaves nothing behind
    bad = run_prepare(
        "corpus=text",
        f"corpus.paths=[{tmp_path / 'missing.txt'}]",
        f"data_dir={tmp_path / 'd2'}",
        f"hydra.run.dir={tmp_path / 'run2'}",
    )
    assert bad.returncode != 0 and "missing.txt' does not exist" in bad.stderr
    assert read_manifest(out)["counts"] == m["counts"]
    assert not (tmp_path / "d2").exists() or not any((tmp_path / "d2").iterdir())
