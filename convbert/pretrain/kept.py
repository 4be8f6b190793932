"""The checkpoints a pretraining run kept for good (trainer.keep_steps / keep_every, in checkpoints/kept/), each
exported as a fine-tuning init: a dir shaped like a finished run dir (hf/ with its vocabulary, tokenizer.json,
vocab.txt, and a pretrain_summary.json with that step's tokens, FLOPs and device hours), which `init=` takes.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from convbert.config import ConvBertConfig
from convbert.io import read_json, write_json_atomic
from convbert.model import ConvBertModel
from convbert.pretrain.engine import export
from convbert.pretrain.state import device_hours
from convbert.train.checkpoint import CheckpointError, checkpoint_step, list_kept, load_checkpoint

VOCAB_FILES = ("tokenizer.json", "vocab.txt")


def kept_checkpoints(run_dir: Path) -> list[Path]:
    """The run's kept checkpoints by step; a clear error when it is not a run dir or kept none."""
    if not (run_dir / "checkpoints").is_dir():
        raise FileNotFoundError(f"{run_dir} is not a pretraining run dir (no checkpoints/)")
    kept = list_kept(run_dir / "checkpoints")
    if not kept:
        raise FileNotFoundError(f"{run_dir / 'checkpoints' / 'kept'} holds no checkpoints: pretrain with "
                                "trainer.keep_steps=[...] or trainer.keep_every=N (a resume may add them)")
    missing = [f for f in VOCAB_FILES if not (run_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{run_dir} lacks {missing}: the vocabulary the run was trained with")
    return kept


def point_name(run_dir: Path, step: int) -> str:
    """The init's name, and so its fine-tuning job dirs' and table rows': distinct for every run and step."""
    return f"{run_dir.resolve().name}-step{step}"


def discriminator(state: dict[str, Any], path: Path) -> ConvBertModel:
    """The discriminator of a pretraining checkpoint's ElectraPretrainer state."""
    try:
        model = ConvBertModel(ConvBertConfig.from_dict(state["config"]))
        prefix = "discriminator."
        model.load_state_dict({k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)})
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        raise CheckpointError(f"{path} is not a pretraining checkpoint with a discriminator: {e}") from e
    return model


def stamp(path: Path) -> dict[str, int]:
    """Which file an export was made from: a run redone under the same name writes new checkpoint files."""
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def step_summary(run_dir: Path, path: Path, state: dict[str, Any]) -> dict[str, Any]:
    """pretrain_summary.json for the checkpoint's step (its totals are up to date: a kept step logs a row)."""
    totals = state["totals"]
    world_size = len(state.get("rng") or [None])
    final = run_dir / "pretrain_summary.json"
    device = read_json(final).get("device", "unknown") if final.is_file() else "unknown"
    return {"step": int(state["step"]), "tokens": int(totals["tokens"]), "flops": totals["flops"],
            "device_hours": device_hours(totals, world_size), "device": device,
            "checkpoint": str(path.resolve()), "checkpoint_stamp": stamp(path)}


def export_kept(run_dir: Path, path: Path, out_dir: Path) -> Path:
    """out_dir/<point_name>/ for the kept checkpoint `path`: built in a temporary dir and renamed into place, so
    it exists only whole; reused when it is already there, made from this very file."""
    dest = out_dir / point_name(run_dir, checkpoint_step(path))
    if (dest / "pretrain_summary.json").is_file():
        made_from = read_json(dest / "pretrain_summary.json", error=CheckpointError).get("checkpoint_stamp")
        if made_from != stamp(path):
            raise FileExistsError(f"{dest} was exported from another {path} (was the run redone?), so it and the "
                                  "jobs fine-tuned from it describe another model: move them away to redo them")
        return dest
    if dest.exists():
        raise FileExistsError(f"{dest} exists but is not a finished export (no pretrain_summary.json); move it away")
    state = load_checkpoint(path)
    tmp = out_dir / f".{dest.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        export(discriminator(state, path), run_dir, tmp)
        for f in VOCAB_FILES:
            shutil.copy2(run_dir / f, tmp / f)
        write_json_atomic(tmp / "pretrain_summary.json", step_summary(run_dir, path, state))
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
