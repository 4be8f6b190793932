"""Pretraining through the real entry point (`python -m pipelines.pretrain`, `torchrun`) on a tiny config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_process, torchrun

from convbert.data.config import from_mapping
from convbert.model import ConvBertModel
from convbert.pretrain import TrainerConfig, _check_writable, check_resume_config
from convbert.train import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "corpus.max_bytes=60000", "tokenizer.vocab_size=600", "max_seq_length=64", "+model.num_hidden_layers=2",
    "trainer.batch_size=8", "trainer.warmup_steps=1", "trainer.log_every=1", "trainer.progress=false",
    "trainer.num_threads=1", "tracking=disabled",
]
NO_DROPOUT = ["model.hidden_dropout_prob=0.0", "model.attention_probs_dropout_prob=0.0"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


def pretrain(run_dir: Path, data_dir: Path, *overrides: str, nproc: int = 1, check: bool = True):
    launcher = [] if nproc == 1 else torchrun(nproc)
    cmd = [*launcher, "-m", "pipelines.pretrain", *TINY, f"data_dir={data_dir}", f"hydra.run.dir={run_dir}", *overrides]
    proc = run_process(cmd, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"pretraining failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def losses(run_dir: Path) -> list[tuple[int, float, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["mlm_loss"], r["rtd_loss"]) for r in rows]


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpts = sorted((run_dir / "checkpoints").glob("step_*.pt"))
    return load_checkpoint(ckpts[-1])["model"]


@pytest.mark.slow
def test_run_writes_outputs_and_resume_is_exact(tmp_path, data_dir):
    full = tmp_path / "full"
    pretrain(full, data_dir, "trainer.max_steps=6", "trainer.ckpt_every=3")
    for f in ("checkpoints/step_00000006.pt", "hf/config.json", "hf/model.safetensors", "hf/vocab.txt",
              "metrics.jsonl", ".hydra/config.yaml", "loss.png", "pretrain_summary.json", "tokenizer.json"):
        assert (full / f).exists(), f
    summary = json.loads((full / "pretrain_summary.json").read_text())
    assert summary["steps"] == 6 and summary["finished"] and summary["tokens"] > 0 and summary["flops"] > 0
    exported = ConvBertModel.from_hf(full / "hf")
    weights = final_weights(full)
    assert torch.equal(exported.embeddings.word_embeddings.weight,
                       weights["discriminator.embeddings.word_embeddings.weight"])

    split = tmp_path / "split"
    pretrain(split, data_dir, "trainer.max_steps=6", "trainer.ckpt_every=3", "trainer.stop_after=3")
    assert [p.name for p in (split / "checkpoints").glob("*.pt")] == ["step_00000003.pt"]
    out = pretrain(split, data_dir, "trainer.max_steps=6", "trainer.ckpt_every=3")
    assert "resumed from" in out.stdout + out.stderr
    resumed = final_weights(split)
    assert all(torch.equal(weights[k], resumed[k]) for k in weights)  # bit-identical to the uninterrupted run
    assert losses(split) == losses(full)


@pytest.mark.slow
def test_resume_refuses_other_settings_and_follows_a_longer_schedule(tmp_path, data_dir):
    run = tmp_path / "run"
    pretrain(run, data_dir, "trainer.max_steps=4", "trainer.ckpt_every=2", "trainer.stop_after=2")
    record = {f: (run / f).read_bytes() for f in ("config.json", "vocab.txt", "checkpoints/step_00000002.pt")}
    for bad, message in [("trainer.lr=5e-5", "trainer.lr: 0.001 -> 5e-05"), ("seed=2", "seed: 1 -> 2"),
                         ("resume=true", "resume must be one of")]:
        proc = pretrain(run, data_dir, "trainer.max_steps=4", bad, check=False)
        assert proc.returncode != 0 and message in proc.stderr, (bad, proc.stderr[-2000:])
        assert all((run / f).read_bytes() == data for f, data in record.items()), bad
    with open(run / "metrics.jsonl", "a") as f:  # a row logged after the checkpoint by a job that was killed
        f.write(json.dumps({"step": 3, "mlm_loss": 0.0}) + "\n")
    pretrain(run, data_dir, "trainer.max_steps=8", "trainer.ckpt_every=2")  # train longer: allowed
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 9)) and rows[2]["mlm_loss"] > 0
    base = json.loads((run / "config.json").read_text())["trainer"]["lr"]
    assert rows[2]["lr"] == pytest.approx(base * (1 - 2 / 8))  # step 3 follows the new schedule, not the old


def test_resume_check_knows_settings_added_since_a_run_was_written(tmp_path):
    saved = {"seed": 1, "trainer": {"lr": 1e-3}}  # written before trainer.adam_bias_correction existed
    check_resume_config(saved, {"seed": 1, "trainer": {"lr": 1e-3, "adam_bias_correction": True}}, tmp_path)
    with pytest.raises(ValueError, match=r"trainer.adam_bias_correction: True -> False"):
        check_resume_config(saved, {"seed": 1, "trainer": {"lr": 1e-3, "adam_bias_correction": False}}, tmp_path)


@pytest.mark.slow
def test_ddp_and_accumulation_match_one_process(tmp_path, data_dir):
    steps = ["trainer.max_steps=3", *NO_DROPOUT]
    pretrain(tmp_path / "one", data_dir, *steps)
    pretrain(tmp_path / "ddp", data_dir, *steps, nproc=2)
    pretrain(tmp_path / "accum", data_dir, *steps, "trainer.grad_accum=2")
    ref = losses(tmp_path / "one")
    assert [r[0] for r in ref] == [1, 2, 3]
    for other in ("ddp", "accum"):
        got = losses(tmp_path / other)
        assert len(got) == 3
        for (s1, m1, r1), (s2, m2, r2) in zip(ref, got, strict=True):
            assert s1 == s2 and abs(m1 - m2) <= 1e-5 and abs(r1 - r2) <= 1e-5, (other, s1, m1, m2, r1, r2)
    w1, w2 = final_weights(tmp_path / "one"), final_weights(tmp_path / "ddp")
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < 1e-4


@pytest.mark.slow
def test_non_finite_loss_stops_with_clear_message_and_keeps_checkpoint(tmp_path, data_dir):
    run_dir = tmp_path / "nan"
    proc = pretrain(run_dir, data_dir, "trainer.max_steps=6", "trainer.ckpt_every=1", "trainer.lr=1e30",
                    check=False)
    assert proc.returncode != 0
    assert "non-finite loss/gradients" in proc.stderr
    kept = sorted((run_dir / "checkpoints").glob("step_*.pt"))
    assert kept, "the last good checkpoint is kept"
    state = load_checkpoint(kept[-1])
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_batch_geometry_and_run_dir_errors(tmp_path):
    assert TrainerConfig(batch_size=32, grad_accum=2).micro_batch(world_size=4) == 4
    with pytest.raises(ValueError, match="not divisible by world_size"):
        TrainerConfig(batch_size=30, grad_accum=4).micro_batch(world_size=2)
    for bad in ({"grad_accum": 0}, {"ckpt_every": 0}, {"log_every": 0}, {"stop_after": 0}):
        with pytest.raises(ValueError, match=f"trainer.{next(iter(bad))} must be >= "):
            TrainerConfig(**bad)
    with pytest.raises(ValueError, match=r"unknown trainer config key\(s\) \['batch_sise'\]"):
        from_mapping(TrainerConfig, "trainer", {"batch_sise": 8})
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match="not writable"):
        _check_writable(blocker / "run")


@pytest.mark.slow
def test_wandb_offline_run_is_recorded(tmp_path, data_dir):
    run_dir = tmp_path / "tracked"
    pretrain(run_dir, data_dir, "trainer.max_steps=2", "tracking=wandb", "tracking.mode=offline")
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))
    assert (run_dir / "wandb_id.txt").read_text().strip() in runs[0].name
