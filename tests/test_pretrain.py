"""Pretraining through the real entry point (`python -m pipelines.pretrain`, `torchrun`) on a tiny config."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from helpers import run_entry, run_process, start_process, torchrun

from convbert.model import ConvBertModel
from convbert.pretrain import (
    PREEMPTED_EXIT_CODE,
    ExportError,
    PretrainTrainerConfig,
    check_resume_config,
    check_writable,
)
from convbert.settings import ConfigError
from convbert.train import load_checkpoint
from convbert.train.divergence import Diverged
from convbert.train.lock import DirLock, DirLockedError

TINY = [
    "corpus.max_bytes=60000", "tokenizer.vocab_size=600", "max_seq_length=64", "model.num_hidden_layers=2",
    "trainer.batch_size=8", "optim.warmup_steps=1", "trainer.log_every=1", "trainer.progress=false",
    "trainer.threads=1", "tracking=disabled", "heldout_fraction=0.2", "trainer.eval_examples=8",
    "trainer.eval_every=3",
]
NO_DROPOUT = ["model.hidden_dropout_prob=0.0", "model.attention_probs_dropout_prob=0.0"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


def command(run_dir: Path, data_dir: Path, *overrides: str, nproc: int = 1) -> list[str]:
    launcher = ["-m"] if nproc == 1 else [*torchrun(nproc), "-m"]
    return [*launcher, "pipelines.pretrain", *TINY, f"data_dir={data_dir}", f"hydra.run.dir={run_dir}", *overrides]


def pretrain(run_dir: Path, data_dir: Path, *overrides: str, nproc: int = 1, check: bool = True):
    proc = run_process(command(run_dir, data_dir, *overrides, nproc=nproc))
    if check and proc.returncode != 0:
        raise AssertionError(f"pretraining failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def train(run_dir: Path, data_dir: Path, *overrides: str) -> None:
    """The same run in this process (helpers.run_entry): for tests where no process boundary matters."""
    run_entry("pretrain", *TINY, f"data_dir={data_dir}", *overrides, run_dir=run_dir)


def start(run_dir: Path, data_dir: Path, *overrides: str, nproc: int = 1) -> subprocess.Popen:
    return start_process(command(run_dir, data_dir, *overrides, nproc=nproc))


def wait_for_rows(run_dir: Path, proc: subprocess.Popen, n: int = 1) -> None:
    """Until metrics.jsonl has n rows: the run is mid-training."""
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        path = run_dir / "metrics.jsonl"
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"no training rows (rc {proc.poll()}): {proc.communicate()[1][-3000:]}")


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def losses(run_dir: Path) -> list[tuple[int, float, float]]:
    return [(r["step"], r["mlm_loss"], r["rtd_loss"]) for r in rows(run_dir) if "mlm_loss" in r]


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpts = sorted((run_dir / "checkpoints").glob("step_*.pt"))
    return load_checkpoint(ckpts[-1])["model"]


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir) -> Path:
    """An uninterrupted 6-step run with held-out evaluation every 3 steps."""
    run = tmp_path_factory.mktemp("ref") / "full"
    pretrain(run, data_dir, "trainer.max_steps=6", "trainer.ckpt_every=3")
    return run


@pytest.mark.slow  # end to end: the reference run is a subprocess through the entry point
def test_run_writes_outputs_and_heldout_metrics(reference):
    for f in ("checkpoints/step_00000006.pt", "hf/config.json", "hf/model.safetensors", "hf/vocab.txt",
              "metrics.jsonl", ".hydra/config.yaml", "loss.png", "pretrain_summary.json", "tokenizer.json"):
        assert (reference / f).exists(), f
    assert not (reference / ".lock").exists()
    summary = json.loads((reference / "pretrain_summary.json").read_text())
    assert summary["steps"] == 6 and summary["finished"] and summary["tokens"] > 0 and summary["flops"] > 0
    # speed from the first log row on: tokens/s, and MFU against this device's measured matmul rate
    speed, trained = summary["throughput"], [r for r in rows(reference) if "mlm_loss" in r]
    assert speed["tokens_measured"] == summary["tokens"] - trained[0]["tokens"] and speed["tokens_per_s"] > 0
    assert 0 < speed["mfu"] < 1 and speed["matmul_tflops"] > 0
    assert all(r["tokens_per_s"] > 0 and 0 < r["mfu"] < 1 for r in trained)
    held = summary["heldout_metrics"]
    assert held["step"] == 6
    for key in ("mlm_loss", "mlm_accuracy", "rtd_loss", "disc_accuracy", "disc_precision", "disc_recall",
                "disc_auc"):
        assert math.isfinite(held[key]), key
    logged = [r for r in rows(reference) if "heldout_mlm_loss" in r]
    assert [r["step"] for r in logged] == [3, 6] and all(math.isfinite(r["heldout_rtd_loss"]) for r in logged)
    assert [r["step"] for r in rows(reference)] == list(range(1, 7))  # one row per step, held-out merged in
    exported = ConvBertModel.from_hf(reference / "hf")
    assert torch.equal(exported.embeddings.word_embeddings.weight,
                       final_weights(reference)["discriminator.embeddings.word_embeddings.weight"])


@pytest.mark.slow  # compares against the reference run (a subprocess)
def test_resume_without_evaluation_is_bit_identical(tmp_path, data_dir, reference, capsys):
    """A job stopped by stop_after and resumed, with evaluation off, ends with the reference's weights (which
    evaluated twice): evaluation does not change the training stream, and resume is exact."""
    split = tmp_path / "split"
    off = ["trainer.eval_examples=0"]
    train(split, data_dir, "trainer.max_steps=6", "trainer.ckpt_every=3", "trainer.stop_after=3", *off)
    assert [p.name for p in (split / "checkpoints").glob("*.pt")] == ["step_00000003.pt"]
    train(split, data_dir, "trainer.max_steps=6", "trainer.ckpt_every=3", *off)
    assert "resumed from" in capsys.readouterr().out
    assert same_weights(final_weights(reference), final_weights(split))
    assert losses(split) == losses(reference)


def test_finished_run_rerun_retries_only_the_export(tmp_path, data_dir, capsys):
    run = tmp_path / "done"
    train(run, data_dir, "trainer.max_steps=2", "trainer.ckpt_every=2")
    ckpt = (run / "checkpoints" / "step_00000002.pt").read_bytes()
    before = rows(run)
    for f in ("pretrain_summary.json", "loss.png"):
        (run / f).unlink()
    shutil.rmtree(run / "hf")
    (run / "hf").write_text("a file where the export goes: the export fails")
    with pytest.raises(ExportError, match=r"training reached step 2 and is saved in .*step_00000002.pt, but the "
                                          r"export to .*hf failed: .*rerun the same command"):
        train(run, data_dir, "trainer.max_steps=2", "trainer.ckpt_every=2")
    assert not (run / "pretrain_summary.json").exists() and not (run / ".hf.tmp").exists()
    (run / "hf").unlink()
    train(run, data_dir, "trainer.max_steps=2", "trainer.ckpt_every=2")
    assert "already at step 2" in capsys.readouterr().out
    assert (run / "hf" / "model.safetensors").exists() and (run / "pretrain_summary.json").exists()
    assert (run / "checkpoints" / "step_00000002.pt").read_bytes() == ckpt and rows(run) == before


@pytest.mark.slow  # end to end: a pretraining subprocess, signalled
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGUSR1", "SIGINT"])
def test_stop_signal_checkpoints_and_resume_is_exact(tmp_path, data_dir, sig):
    run = tmp_path / "stopped"
    steps = ["trainer.max_steps=40", "trainer.ckpt_every=100", "trainer.eval_examples=0"]
    proc = start(run, data_dir, *steps)
    wait_for_rows(run, proc)
    sent = time.time()
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == PREEMPTED_EXIT_CODE, err[-3000:]
    assert time.time() - sent < 20
    ckpts = sorted((run / "checkpoints").glob("step_*.pt"))
    assert len(ckpts) == 1, ckpts
    step = int(ckpts[0].stem.split("_")[1])
    assert 0 < step < 40 and f"stopped by {sig} at step {step}; checkpoint {ckpts[0]}" in err
    assert "rerun the same command to resume" in err and not (run / ".lock").exists()
    if sig != "SIGTERM":
        return
    train(run, data_dir, *steps)
    reference = tmp_path / "uninterrupted"
    train(reference, data_dir, *steps)
    assert same_weights(final_weights(run), final_weights(reference))
    assert [r["step"] for r in rows(run)] == list(range(1, 41))


@pytest.mark.slow  # end to end: torchrun with 2 ranks, one signalled
def test_ddp_stop_signal_on_one_rank_stops_both_at_the_same_step(tmp_path, data_dir):
    run = tmp_path / "ddp"
    proc = start(run, data_dir, "trainer.max_steps=200", "trainer.ckpt_every=1000", "trainer.stop_check_every=2",
                 "trainer.eval_examples=0", nproc=2)
    wait_for_rows(run, proc)
    workers = []
    for child in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split():
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        workers.append((b"RANK=1" in environ, int(child)))
    rank1 = [pid for is_rank1, pid in workers if is_rank1]
    assert len(rank1) == 1, workers
    os.kill(rank1[0], signal.SIGUSR1)
    _, err = proc.communicate(timeout=120)
    ckpts = sorted((run / "checkpoints").glob("step_*.pt"))
    assert len(ckpts) == 1, err[-3000:]
    step = int(ckpts[0].stem.split("_")[1])
    assert step % 2 == 0 and step < 200
    assert f"stopped by a stop signal on another rank at step {step}" in err  # rank 0
    assert f"rank 1: stopped by SIGUSR1 at step {step}" in err
    rng = load_checkpoint(ckpts[0])["rng"]  # dropout is seeded per rank: the ranks' masks differ
    assert len(rng) == 2 and not torch.equal(rng[0]["torch"], rng[1]["torch"])


@pytest.mark.slow  # compares against the reference run (a subprocess)
def test_damaged_newest_checkpoint_and_torn_log_fall_back(tmp_path, data_dir, reference, capsys):
    run = tmp_path / "damaged"
    train(run, data_dir, "trainer.max_steps=6", "trainer.ckpt_every=2", "trainer.stop_after=4",
             "trainer.eval_examples=0")
    newest = run / "checkpoints" / "step_00000004.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # cut short mid-copy
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "mlm_lo')  # a job killed mid-write
    with pytest.warns(UserWarning) as warned:
        train(run, data_dir, "trainer.max_steps=6", "trainer.ckpt_every=2", "trainer.eval_examples=0")
    messages = " ".join(str(w.message) for w in warned)
    assert f"skipping checkpoint {newest}" in messages and "torn last line" in messages
    assert "step_00000002.pt at step 2" in capsys.readouterr().out
    assert [r["step"] for r in rows(run)] == list(range(1, 7))
    assert same_weights(final_weights(run), final_weights(reference))


@pytest.mark.slow  # end to end: a pretraining subprocess, killed
def test_crash_before_first_checkpoint_rerun_logs_each_step_once(tmp_path, data_dir):
    run = tmp_path / "crashed"
    steps = ["trainer.max_steps=12", "trainer.ckpt_every=100", "trainer.eval_examples=0"]
    proc = start(run, data_dir, *steps)
    wait_for_rows(run, proc, 2)
    proc.kill()  # no handler runs: the lock and the logged rows stay behind
    proc.wait()
    assert (run / ".lock").exists() and rows(run)
    with pytest.warns(UserWarning, match="taking over the lock"):
        train(run, data_dir, *steps)
    assert [r["step"] for r in rows(run)] == list(range(1, 13))


def test_second_job_on_a_locked_run_dir_is_refused(tmp_path, data_dir):
    run = tmp_path / "busy"
    with DirLock(run, "pretraining run"), pytest.raises(DirLockedError) as refused:
        train(run, data_dir, "trainer.max_steps=2")
    assert f"{run} is in use by another pretraining run: pid {os.getpid()}" in str(refused.value)
    assert not (run / "checkpoints").exists()


def test_resume_refuses_other_settings_and_follows_a_longer_schedule(tmp_path, data_dir):
    run = tmp_path / "run"
    train(run, data_dir, "trainer.max_steps=4", "trainer.ckpt_every=2", "trainer.stop_after=2")
    record = {f: (run / f).read_bytes() for f in ("config.json", "vocab.txt", "checkpoints/step_00000002.pt")}
    for bad, message in [("optim.lr=5e-5", "optim.lr: 0.001 -> 5e-05"), ("seed=2", "seed: 1 -> 2"),
                         ("resume=true", "resume must be one of")]:
        with pytest.raises(ConfigError, match=message):
            train(run, data_dir, "trainer.max_steps=4", bad)
        assert all((run / f).read_bytes() == data for f, data in record.items()), bad
    train(run, data_dir, "trainer.max_steps=8", "trainer.ckpt_every=2")  # train longer: allowed
    logged = [r for r in rows(run) if "mlm_loss" in r]
    assert [r["step"] for r in logged] == list(range(1, 9))
    base = json.loads((run / "config.json").read_text())["optim"]["lr"]
    assert logged[2]["lr"] == pytest.approx(base * (1 - 2 / 8))  # step 3 follows the new schedule, not the old
    # the data prepared now has another vocabulary (a corpus file changed): token ids would change meaning
    own = (run / "vocab.txt").read_text().split("\n")
    (run / "vocab.txt").write_text("\n".join([own[0], own[6], *own[1:6], *own[7:]]))
    with pytest.raises(ConfigError, match=f"trained with the vocabulary in {run / 'vocab.txt'}, but the data"):
        train(run, data_dir, "trainer.max_steps=10")
    (run / "config.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="config.json: expected the run's settings as a JSON object, got list"):
        train(run, data_dir, "trainer.max_steps=8")
    (run / "config.json").unlink()
    with pytest.raises(ConfigError, match="holds checkpoints but no config.json"):
        train(run, data_dir, "trainer.max_steps=8")


def test_resume_check_understands_old_spellings(tmp_path):
    new = {"seed": 1, "model": {"preset": "tiny", "attention": "mixed", "num_hidden_layers": 4, "head_ratio": 2},
           "optim": {"lr": 1e-3, "bias_correction": True, "warmup_steps": 200, "warmup_fraction": None,
                     "layer_decay": None, "layer_decay_variant": "electra"}, "heldout_fraction": 0.0}
    # written before the optim group and the full model group: trainer.lr, null model knobs, no bias correction
    old = {"seed": 1, "model": {"preset": "tiny", "attention": "mixed", "head_ratio": None},
           "trainer": {"lr": 1e-3, "warmup_steps": 200}}
    check_resume_config(old, new, tmp_path)
    with pytest.raises(ConfigError, match=r"optim.lr: 0.001 -> 0.0003"):
        check_resume_config(old, {**new, "optim": {**new["optim"], "lr": 3e-4}}, tmp_path)
    with pytest.raises(ConfigError, match=r"heldout_fraction: 0.0 -> 0.05"):
        check_resume_config(old, {**new, "heldout_fraction": 0.05}, tmp_path)
    # built before corpus.overflow existed: with ELECTRA's truncation, which the new default changes
    old["corpus"], new["corpus"] = {"source": "pydocs"}, {"source": "pydocs", "overflow": "split"}
    with pytest.raises(ConfigError, match=r"corpus.overflow: 'truncate' -> 'split'"):
        check_resume_config(old, new, tmp_path)
    check_resume_config(old, {**new, "corpus": {"source": "pydocs", "overflow": "truncate"}}, tmp_path)


@pytest.mark.slow  # end to end: torchrun with 2 ranks
def test_ddp_and_accumulation_match_one_process(tmp_path, data_dir):
    steps = ["trainer.max_steps=3", "trainer.eval_every=2", *NO_DROPOUT]
    train(tmp_path / "one", data_dir, *steps)
    pretrain(tmp_path / "ddp", data_dir, *steps, nproc=2)
    train(tmp_path / "accum", data_dir, *steps, "trainer.grad_accum=2")
    ref = losses(tmp_path / "one")
    assert [r[0] for r in ref] == [1, 2, 3]
    held = [r["heldout_mlm_loss"] for r in rows(tmp_path / "one") if "heldout_mlm_loss" in r]
    for other in ("ddp", "accum"):
        got = losses(tmp_path / other)
        assert len(got) == 3
        for (s1, m1, r1), (s2, m2, r2) in zip(ref, got, strict=True):
            assert s1 == s2 and abs(m1 - m2) <= 1e-5 and abs(r1 - r2) <= 1e-5, (other, s1, m1, m2, r1, r2)
        other_held = [r["heldout_mlm_loss"] for r in rows(tmp_path / other) if "heldout_mlm_loss" in r]
        assert other_held == pytest.approx(held, abs=1e-5)  # the same held-out masks, split over ranks
    w1, w2 = final_weights(tmp_path / "one"), final_weights(tmp_path / "ddp")
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < 1e-4


def test_non_finite_weights_are_never_written(tmp_path, data_dir):
    run_dir = tmp_path / "nan"
    with pytest.raises(FloatingPointError, match="non-finite .*weights .*stopping without writing") as e:
        train(run_dir, data_dir, "trainer.max_steps=6", "trainer.ckpt_every=1", "optim.lr=1e30")
    kept = sorted((run_dir / "checkpoints").glob("step_*.pt"))
    assert kept and f"Last checkpoint (checked when written): {kept[-1]}" in str(e.value)
    assert all(torch.isfinite(v).all() for v in load_checkpoint(kept[-1])["model"].values())
    assert not (run_dir / "hf").exists()


def test_divergence_that_stays_finite_stops_the_run_without_an_export(tmp_path, data_dir):
    """lr=1e3 keeps the losses finite (1e3-1e5) but far above an untrained model's: the run stops at the first
    log row past 10x ln V (or 10x ln 2), before the checkpoint of that step, and exports nothing."""
    run_dir = tmp_path / "diverged"
    with pytest.raises(Diverged, match=r"training diverged by step \d+: (mlm_loss .* \(ln 600|rtd_loss .* \(ln 2) "):
        train(run_dir, data_dir, "trainer.max_steps=20", "trainer.ckpt_every=1", "optim.lr=1e3",
              "trainer.eval_examples=0")
    logged = losses(run_dir)
    assert all(math.isfinite(m) and math.isfinite(r) for _, m, r in logged)  # finite: NaN checks never fired
    assert logged[-1][1] > 10 * math.log(600) or logged[-1][2] > 10 * math.log(2)
    kept = sorted((run_dir / "checkpoints").glob("step_*.pt"))
    assert [int(p.stem[5:]) for p in kept] == [s for s, _, _ in logged[:-1]][-len(kept):]  # none of the last step
    assert not (run_dir / "hf").exists() and not (run_dir / "pretrain_summary.json").exists()
    # a healthy run of the same length never comes near the bound
    train(tmp_path / "healthy", data_dir, "trainer.max_steps=20", "trainer.eval_examples=0")
    assert max(m for _, m, _ in losses(tmp_path / "healthy")) < 1.5 * math.log(600)


def test_a_checkpoint_of_another_model_shape_is_skipped_naming_it(tmp_path, data_dir):
    run_dir, other = tmp_path / "run", tmp_path / "other"
    train(run_dir, data_dir, "trainer.max_steps=2", "trainer.eval_examples=0")
    train(other, data_dir, "trainer.max_steps=3", "trainer.eval_examples=0", "model.intermediate_size=256")
    foreign = run_dir / "checkpoints" / "step_00000003.pt"
    shutil.copy(other / "checkpoints" / "step_00000003.pt", foreign)
    with pytest.warns(UserWarning, match=f"skipping checkpoint {foreign}: written for another model shape: "
                                         r"discriminator\.layers\.0\.intermediate\.weight is \[256, 128\]"):
        train(run_dir, data_dir, "trainer.max_steps=4", "trainer.eval_examples=0")
    assert [s for s, _, _ in losses(run_dir)] == [1, 2, 3, 4]  # resumed from step 2, its own


def test_trainer_config_errors(tmp_path):
    assert PretrainTrainerConfig(batch_size=32, grad_accum=2).micro_batch(world_size=4) == 4
    with pytest.raises(ValueError, match="not divisible by world_size"):
        PretrainTrainerConfig(batch_size=30, grad_accum=4).micro_batch(world_size=2)
    for bad in ({"grad_accum": 0}, {"ckpt_every": 0}, {"log_every": 0}, {"stop_after": 0}, {"precision": "fp8"},
                {"compile": "yes"}, {"compile": 1}):
        with pytest.raises(ConfigError, match=f"trainer.{next(iter(bad))} must be"):
            PretrainTrainerConfig(**bad)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match="not writable"):
        check_writable(blocker / "run")


def test_wandb_offline_run_is_recorded(tmp_path, data_dir):
    run_dir = tmp_path / "tracked"
    train(run_dir, data_dir, "trainer.max_steps=2", "tracking=wandb", "tracking.mode=offline")
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))
    assert (run_dir / "wandb_id.txt").read_text().strip() in runs[0].name


@pytest.mark.slow  # end to end: a Hydra multirun subprocess
def test_sweep_jobs_get_their_own_run_dirs(tmp_path, data_dir):
    runs = tmp_path / "runs"
    proc = run_process(["-m", "pipelines.pretrain", "-m", "optim.lr=1e-3,3e-4", *TINY, "trainer.max_steps=1",
                        "trainer.eval_examples=0", f"data_dir={data_dir}", f"paths.runs_dir={runs}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p.parent for p in runs.glob("pretrain/multirun/*/*/config.json"))
    assert [p.name for p in jobs] == ["tiny-mixed-pydocs-0", "tiny-mixed-pydocs-1"]
    assert [json.loads((p / "config.json").read_text())["optim"]["lr"] for p in jobs] == [1e-3, 3e-4]


def test_a_busy_run_dir_is_refused_before_hydra_rewrites_its_config(tmp_path, data_dir):
    run = tmp_path / "busy"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- the live run's own\n")
    with DirLock(run, "pretraining run"):  # this test process: a live run
        proc = pretrain(run, data_dir, "optim.lr=0.5", check=False)
    assert proc.returncode == 1 and f"in use by another pretraining run: pid {os.getpid()}" in proc.stderr
    assert (run / ".hydra" / "overrides.yaml").read_text() == "- the live run's own\n"
    train(run, data_dir, "trainer.max_steps=2")  # a run with a checkpoint, then the same dir under another lr
    proc = pretrain(run, data_dir, "trainer.max_steps=4", "optim.lr=0.5", check=False)
    assert proc.returncode == 1 and "holds a run with other settings (optim.lr: 0.001 -> 0.5)" in proc.stderr
    assert (run / ".hydra" / "overrides.yaml").read_text() == "- the live run's own\n"


def test_run_dir_that_cannot_be_created_is_named_before_hydra_fails(tmp_path, data_dir):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = pretrain(blocker / "run", data_dir, check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: run dir {blocker / 'run'} cannot be created: {blocker} is not a directory")


@pytest.mark.skipif(not hasattr(torch._dynamo.config, "debug_backend_override"), reason="needs torch >= 2.13")
def test_compiled_run_checkpoints_plain_weights_that_an_eager_run_resumes(tmp_path, data_dir):
    """trainer.compile=true (the CUDA default) through the engine: the pretrainer compiles whole (aot_eager
    here, by dynamo's backend override: what inductor would compile, without its C++ build), trains, and its
    checkpoint holds the plain parameter names, so an eager job resumes it."""
    run_dir = tmp_path / "compiled"
    with torch._dynamo.config.patch(debug_backend_override=">=0:aot_eager"):
        torch._dynamo.reset()
        counters = torch._dynamo.utils.counters
        counters.clear()
        try:
            train(run_dir, data_dir, "trainer.compile=true", "trainer.max_steps=4", "trainer.ckpt_every=2",
                  "trainer.stop_after=2", "trainer.eval_examples=0")
            graphs = counters["stats"]["unique_graphs"]
        finally:
            torch._dynamo.reset()
    assert graphs >= 2  # one per phase at least: the model did run compiled
    weights = final_weights(run_dir)
    assert not any("_orig_mod" in k for k in weights) and all(torch.isfinite(v).all() for v in weights.values())
    train(run_dir, data_dir, "trainer.compile=false", "trainer.max_steps=4", "trainer.ckpt_every=2",
          "trainer.eval_examples=0")
    assert [r["step"] for r in rows(run_dir) if "mlm_loss" in r] == [1, 2, 3, 4]
    assert all(math.isfinite(r["mlm_loss"]) for r in rows(run_dir) if "mlm_loss" in r)
