"""Checkpoint files: atomic writes that clean up after a failure, and reads that fall back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from convbert.train.checkpoint import CheckpointError, list_checkpoints, load_latest, save_checkpoint
from convbert.train.tracking import keep_metrics_until, read_metrics


def state(value: float) -> dict:
    return {"model": {"w": torch.full((64, 64), value)}, "step": int(value)}


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_no_space_left_is_named_and_leaves_no_temp_file(tmp_path: Path) -> None:
    first = save_checkpoint(tmp_path, 1, state(1.0))
    tmp = tmp_path / ".step_00000002.pt.tmp"
    tmp.symlink_to("/dev/full")  # every write there fails with ENOSPC, as on a full disk
    with pytest.raises(CheckpointError, match=f"no space left on device writing {tmp_path / 'step_00000002.pt'}"):
        save_checkpoint(tmp_path, 2, state(2.0))
    assert not tmp.exists() and not tmp.is_symlink()
    assert list_checkpoints(tmp_path) == [first]
    assert torch.equal(load_latest(tmp_path)[1]["model"]["w"], state(1.0)["model"]["w"])


def test_unreadable_newest_falls_back_and_none_readable_names_each(tmp_path: Path) -> None:
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, state(float(step)), keep_last=3)
    newest = tmp_path / "step_00000003.pt"
    newest.write_bytes(newest.read_bytes()[:100])
    with pytest.warns(UserWarning, match=f"skipping checkpoint {newest}"):
        path, loaded = load_latest(tmp_path)
    assert path.name == "step_00000002.pt" and loaded["step"] == 2

    def reject_two(s: dict) -> None:
        if s["step"] == 2:
            raise ValueError("non-finite weights")

    with pytest.warns(UserWarning):
        assert load_latest(tmp_path, reject_two)[0].name == "step_00000001.pt"
    (tmp_path / "step_00000001.pt").write_bytes(b"")
    (tmp_path / "step_00000002.pt").write_bytes(b"not a zip")
    with pytest.warns(UserWarning), pytest.raises(CheckpointError) as e:
        load_latest(tmp_path)
    assert all(f"step_0000000{i}.pt" in str(e.value) for i in (1, 2, 3))
    assert load_latest(tmp_path / "none") is None


def test_a_run_resumed_past_an_unreadable_newer_checkpoint_keeps_its_own(tmp_path: Path) -> None:
    for step in (15, 20):
        save_checkpoint(tmp_path, step, state(float(step)), keep_last=2)
    (tmp_path / "step_00000020.pt").write_bytes(b"torn")  # resuming skips it and goes on from step 15
    for step in (16, 17):  # keep_last=1: each new checkpoint replaces the one before it, not itself
        save_checkpoint(tmp_path, step, state(float(step)), keep_last=1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000017.pt", "step_00000020.pt"]
    with pytest.warns(UserWarning, match="skipping checkpoint"):
        assert load_latest(tmp_path)[1]["step"] == 17


def test_metrics_keep_rows_to_the_resume_step_and_drop_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(f'{{"step": {s}, "loss": 1.0}}\n' for s in range(1, 6)) + '{"step": 6, "lo')
    with pytest.warns(UserWarning, match=f"{path}: dropping its torn last line 6"):
        keep_metrics_until(tmp_path, 3)
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]
    keep_metrics_until(tmp_path, 0)
    assert read_metrics(tmp_path) == [] and path.read_text() == ""
    path.write_text('{"step": 1}\nbroken\n{"step": 3}\n')
    with pytest.raises(ValueError, match=f"{path}:2"):
        read_metrics(tmp_path)
