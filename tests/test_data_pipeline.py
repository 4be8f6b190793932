"""A full tiny run of `python -m pipelines.prepare` (Hydra entry point) on the pydocs corpus."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import run_entry, run_process

from convbert.data import DataError, PretrainDataset, ResumableBatches, check_compatible, read_manifest

pytestmark = pytest.mark.slow  # end to end through the entry point


def test_hydra_entry_point_tiny_pydocs_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ("corpus.max_bytes=300000", "tokenizer.vocab_size=800", "max_seq_length=48", "num_workers=2",
            f"data_dir={tmp_path / 'data'}")
    first = run_process(["-m", "pipelines.prepare", *args, f"hydra.run.dir={tmp_path / 'run'}"], timeout=300)
    assert first.returncode == 0, first.stderr
    (out,) = (tmp_path / "data").iterdir()
    assert out.name.startswith("pydocs-") and f"{out}: " in first.stdout
    m = check_compatible(out, 800, max_seq_length=48)
    assert m["config"]["corpus"]["max_bytes"] == 300_000 and m["config"]["tokenizer"]["kind"] == "wordpiece"
    assert m["counts"]["examples"] > 100
    assert (tmp_path / "run" / ".hydra" / "config.yaml").is_file()
    batch = next(ResumableBatches(PretrainDataset(out), batch_size=4, seed=0))
    assert batch["input_ids"].shape == (4, 48)
    # the rest in this process (the process, .hydra/ and stdout were the first run's to check):
    # the same config again reuses the finished directory
    stamp = (out / "manifest.json").stat().st_mtime_ns
    run_entry("prepare", *args, run_dir=tmp_path / "run")
    assert f"{out}: " in capsys.readouterr().out and (out / "manifest.json").stat().st_mtime_ns == stamp
    # bad input fails with the message and leaves nothing behind
    with pytest.raises(DataError, match="missing.txt' does not exist"):
        run_entry("prepare", "corpus=text", f"corpus.paths=[{tmp_path / 'missing.txt'}]",
                  f"data_dir={tmp_path / 'd2'}", run_dir=tmp_path / "run2")
    assert read_manifest(out)["counts"] == m["counts"]
    assert not (tmp_path / "d2").exists() or not any((tmp_path / "d2").iterdir())
