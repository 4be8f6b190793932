"""End-to-end GLUE fine-tuning through `python -m pipelines.finetune` (tiny preset, a few dozen examples,
max_length 32): single jobs, a 2-job multirun on the joblib launcher, a multirun with a failing job, and
bad-input errors."""

import contextlib
import csv
import hashlib
import json
import logging
import math
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from glue_fixtures import make_benchmark, make_tokenizer, write_glue_dir, write_hub_dir, write_pretrained_run_dir
from helpers import run_entry, run_process
from sklearn import metrics as skm

from convbert.config import ConvBertConfig
from convbert.finetune import DEFAULT_LR, FinetuneConfig, InitError, JobDone, load_init, record_job
from convbert.glue.data import load_dir_split
from convbert.glue.features import featurize
from convbert.glue.run import batch_multiple, predict, run
from convbert.glue.tasks import TASKS
from convbert.model import ConvBertForSequenceClassification
from convbert.tasks import task_info

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = {"task", "metrics", "seed", "model", "pretraining", "steps", "examples_seen", "wall_time_s", "flops",
          "git_revision", "run_dir", "predictions_file"}
MODEL_KEYS = {"name", "preset", "attention", "init", "checkpoint_id", "vocab_id"}
QUICK = ["task.max_length=32", "trainer.batch_size=8", "trainer.eval_batch_size=16", "task.epochs=2",
         "trainer.threads=1", "tracking.mode=disabled"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    bench = make_benchmark(n_train=24, n_dev=12, n_test=6)
    write_glue_dir(root / "glue", bench)
    write_hub_dir(root / "hub", bench, tasks=["stsb", "mnli"])
    write_pretrained_run_dir(root / "pretrain")
    return root


def finetune(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return run_process(["-m", "pipelines.finetune", *args], cwd=cwd, timeout=300)


def read_tsv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


@pytest.mark.slow
def test_single_job_from_pretraining_run_dir(env, tmp_path):
    out = tmp_path / "run"
    p = finetune("task=mrpc", f"init={env / 'pretrain'}", f"data.dir={env / 'glue'}", *QUICK,
                 f"hydra.run.dir={out}")
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert SCHEMA <= set(res) and MODEL_KEYS <= set(res["model"])
    assert res["task"] == "mrpc" and res["seed"] == 1 and set(res["metrics"]) == {"f1", "accuracy"}
    weights = (env / "pretrain" / "hf" / "model.safetensors").read_bytes()
    assert res["model"]["checkpoint_id"] == hashlib.sha256(weights).hexdigest()[:12]
    vocab = (env / "pretrain" / "vocab.txt").read_bytes()
    assert res["model"]["vocab_id"] == hashlib.sha256(vocab).hexdigest()[:12]
    assert res["model"]["preset"] == "tiny" and res["model"]["attention"] == "mixed"
    assert res["pretraining"] == json.loads((env / "pretrain" / "pretrain_summary.json").read_text())
    # double_unordered: 24 pairs -> 48 training features, 6 batches of 8 per epoch
    assert res["steps"] == 2 * 6 and res["examples_seen"] == 2 * 48
    assert res["flops"] > 0 and res["wall_time_s"] > 0 and res["run_dir"] == str(out.resolve())
    # the dev predictions file re-scores to the reported metrics (sklearn)
    rows = read_tsv(Path(res["predictions_file"]))
    assert len(rows) == 12 and {r["split"] for r in rows} == {"validation"}
    y = np.array([int(r["label"]) for r in rows])
    pred = np.array([int(r["prediction"]) for r in rows])
    assert res["metrics"]["accuracy"] == pytest.approx(100 * skm.accuracy_score(y, pred))
    assert res["metrics"]["f1"] == pytest.approx(100 * skm.f1_score(y, pred, zero_division=0))
    # the dev prediction distribution, and whether it collapsed onto one class (the table marks those)
    spread = res["dev_predictions"]["validation"]
    assert spread["counts"] == {str(c): int((pred == c).sum()) for c in np.unique(pred)}
    assert res["collapsed"] == spread["collapsed"] == (spread["top_share"] >= 0.95)
    assert res["data"]["dir"] == str(env / "glue") and res["data"]["max_train_examples"] is None
    sub = read_tsv(out / "submission" / "MRPC.tsv")
    assert [r["index"] for r in sub] == [str(i) for i in range(6)] and {r["prediction"] for r in sub} <= {"0", "1"}
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in evals if "eval/accuracy" in r] == [1, 2]  # dev evaluation after each epoch
    assert (out / ".hydra" / "config.yaml").is_file()
    assert res["dev_examples"] == {"used": 12, "total": 12}
    # the same run dir again (two runs started in the same second): refused, the results stay as they were
    before = (out / "results.json").read_bytes()
    with pytest.raises(JobDone, match="already holds the results.json"):
        run_entry("finetune", "task=mrpc", f"init={env / 'pretrain'}", f"data.dir={env / 'glue'}", *QUICK, run_dir=out)
    assert (out / "results.json").read_bytes() == before and not (out / "failed.json").exists()


@pytest.mark.slow
def test_capped_evaluation_is_recorded_and_writes_no_partial_leaderboard_file(env, tmp_path):
    out = tmp_path / "capped"
    run_entry("finetune", "task=rte", f"init={env / 'pretrain'}", f"data.dir={env / 'glue'}", *QUICK,
              "data.max_eval_examples=5", run_dir=out)
    res = json.loads((out / "results.json").read_text())
    assert res["dev_examples"] == {"used": 5, "total": 12}
    assert res["submission_files"] == {} and not (out / "submission" / "RTE.tsv").exists()  # 5 of 6 test rows


@pytest.mark.slow
def test_multirun_two_jobs_hub_source(env, tmp_path):
    sweep = tmp_path / "sweep"
    p = finetune("-m", "task=stsb,mnli", f"init={env / 'pretrain' / 'hf'}", f"data.hub_path={env / 'hub'}",
                 f"data.cache_dir={tmp_path / 'cache'}", *QUICK, "task.epochs=1",
                 f"hydra.sweep.dir={sweep}")
    assert p.returncode == 0, p.stderr[-3000:]
    stsb = json.loads((sweep / "stsb-seed1-0" / "results.json").read_text())
    mnli = json.loads((sweep / "mnli-seed1-1" / "results.json").read_text())
    assert set(stsb["metrics"]) == {"pearson", "spearman"}
    assert set(mnli["metrics"]) == {"accuracy_m", "accuracy_mm"}
    assert all(0 <= v <= 100 for v in mnli["metrics"].values())
    assert mnli["data"]["source"].startswith("hub:")
    assert mnli["model"]["init_kind"] == "hf" and mnli["pretraining"] is not None  # hf/ of a run dir
    assert sorted(x.name for x in (sweep / "mnli-seed1-1" / "submission").iterdir()) == [
        "AX.tsv", "MNLI-m.tsv", "MNLI-mm.tsv"]
    scores = [float(r["prediction"]) for r in read_tsv(sweep / "stsb-seed1-0" / "submission" / "STS-B.tsv")]
    assert len(scores) == 6 and all(0.0 <= s <= 5.0 for s in scores)
    dev = read_tsv(Path(mnli["predictions_file"]))
    assert {r["split"] for r in dev} == {"validation_matched", "validation_mismatched"}
    # the same sweep again (e.g. after an interruption): finished jobs are reused, not redone or overwritten
    before = {d: (sweep / d / "results.json").read_bytes() for d in ("stsb-seed1-0", "mnli-seed1-1")}
    p = finetune("-m", "task=stsb,mnli", f"init={env / 'pretrain' / 'hf'}", f"data.hub_path={env / 'hub'}",
                 f"data.cache_dir={tmp_path / 'cache'}", *QUICK, "task.epochs=1", f"hydra.sweep.dir={sweep}")
    assert p.returncode == 0, p.stderr[-3000:]
    assert (p.stdout + p.stderr).count("reusing") == 2
    assert all((sweep / d / "results.json").read_bytes() == b for d, b in before.items())


@pytest.mark.slow
def test_failed_job_does_not_lose_the_others(env, tmp_path):
    glue = tmp_path / "glue"
    shutil.copytree(env / "glue", glue)
    lines = (glue / "CoLA" / "train.tsv").read_text().split("\n")
    lines[4] = "gj04\t1\tmissing the sentence column"
    (glue / "CoLA" / "train.tsv").write_text("\n".join(lines))
    sweep = tmp_path / "sweep"
    # random init: the no-pretraining baseline (preset + tokenizer)
    p = finetune("-m", "task=cola,sst2", "init=null", "model.preset=tiny",
                 f"model.vocab={env / 'pretrain' / 'vocab.txt'}", f"data.dir={glue}", *QUICK, "task.epochs=1",
                 f"hydra.sweep.dir={sweep}")
    assert p.returncode != 0
    assert "CoLA/train.tsv:5: malformed row" in p.stderr
    failed = json.loads((sweep / "cola-seed1-0" / "failed.json").read_text())
    assert "CoLA/train.tsv:5" in failed["error"] and not (sweep / "cola-seed1-0" / "results.json").exists()
    res = json.loads((sweep / "sst2-seed1-1" / "results.json").read_text())
    assert res["model"]["checkpoint_id"] == "random" and res["pretraining"] is None
    assert res["model"]["preset"] == "tiny" and set(res["metrics"]) == {"accuracy"}


@pytest.mark.slow
def test_learns_the_fixture_task(tmp_path):
    """In-process run(): a tiny random backbone picks up the label cue word of the synthetic SST-2."""
    bench = make_benchmark(n_train=64, n_dev=32, n_test=4)
    write_glue_dir(tmp_path / "glue", bench, tasks=["sst2"])
    pre = write_pretrained_run_dir(tmp_path / "pre")
    # threads=1: on a busy 2-core machine two OpenMP threads spin against each other
    cfg = dict(task=dict(kind="glue", name="sst2", max_length=32, epochs=5), seed=1, init=str(pre),
               data=dict(dir=str(tmp_path / "glue")), trainer=dict(batch_size=8, threads=1),
               optim=dict(lr=1e-3), tracking=dict(mode="disabled"))
    res = run(cfg, tmp_path / "run")
    assert [h["epoch"] for h in res["history"]] == [1, 2, 3, 4, 5]
    assert res["history"][-1]["train_loss"] < res["history"][0]["train_loss"]
    assert max(h["accuracy"] for h in res["history"]) >= 75.0  # chance is ~50


def test_init_errors(env, tmp_path):
    with pytest.raises(InitError, match="no such directory"):
        load_init(str(tmp_path / "missing"))
    with pytest.raises(InitError, match="needs both a model preset and a vocabulary"):
        load_init(None, preset="tiny")
    # a vocabulary that did not travel with this model
    other = tmp_path / "other"
    shutil.copytree(env / "pretrain", other)
    tok = make_tokenizer()
    tok.add_tokens(["extra", "words"])
    (other / "tokenizer.json").unlink()
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    (other / "vocab.txt").write_text("".join(t + "\n" for t, _ in vocab))
    with pytest.raises(InitError, match=r"vocabulary/model mismatch: .*vocab.txt has \d+ tokens but .*config.json"):
        load_init(str(other))
    (other / "hf" / "model.safetensors").unlink()
    with pytest.raises(InitError, match="no weights"):
        load_init(str(other))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InitError, match="neither a pretraining run dir"):
        load_init(str(tmp_path / "empty"))


def test_configs_compose():
    from hydra import compose, initialize_config_dir
    from hydra.errors import MissingConfigException

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for name in TASKS:
            cfg = compose("finetune", overrides=[f"task={name}"])
            assert cfg.task.kind == "glue" and cfg.task.name == name
            job = FinetuneConfig.from_dict({"task": dict(cfg.task)})  # conf/task leaves the recipe to the registry
            info = task_info(name)
            assert (job.task["epochs"], job.task["double_unordered"]) == (info.epochs, info.double_unordered)
        for launcher, target in [("basic", "BasicLauncher"), ("local_parallel", "JoblibLauncher"),
                                 ("slurm", "SlurmLauncher")]:
            cfg = compose("finetune", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
            assert cfg.hydra.launcher._target_.endswith(target)
        cfg = compose("finetune", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
        assert {"partition", "gpus_per_node", "timeout_min", "cpus_per_task", "mem_gb"} <= set(cfg.hydra.launcher)
        with pytest.raises(MissingConfigException, match="task/nope"):
            compose("finetune", overrides=["task=nope"])
        assert compose("finetune").optim.lr is None and math.isclose(DEFAULT_LR["base"], 1e-4)


@pytest.mark.parametrize("bad, message", [
    ({"optim": {"lr": 0}}, r"optim.lr=0: must be a positive"), ({"optim": {"layer_decay": 1.5}}, "optim.layer_decay="),
    ({"optim": {"layer_decay_variant": "electa"}}, "optim.layer_decay_variant="),
    ({"trainer": {"precision": "bf32"}}, "trainer.precision must be auto or one of"),
    ({"task": {"kind": "glue", "name": "rte", "epochs": 0}}, "task.epochs must be"),
])
def test_hparams_are_checked_before_any_work(bad, message):
    task = {"kind": "glue", "name": "rte"}
    FinetuneConfig.from_dict({"task": task, "optim": {"lr": 3e-4}, "trainer": {"precision": "auto"}})
    with pytest.raises(ValueError, match=message):
        FinetuneConfig.from_dict({"task": task, **bad})


def test_init_pads_with_the_vocabularys_pad_id(env, tmp_path, caplog):
    """transformers' ConvBertConfig defaults to pad_token_id=1; a BERT vocab has [PAD] = 0: pad with 0."""
    hf = tmp_path / "pre"
    shutil.copytree(env / "pretrain", hf)
    cfg = json.loads((hf / "hf" / "config.json").read_text())
    (hf / "hf" / "config.json").write_text(json.dumps({**cfg, "pad_token_id": 1}))
    with caplog.at_level(logging.WARNING):
        pre = load_init(str(hf))
    assert pre.config.pad_token_id == pre.tokenizer.token_to_id("[PAD]") == 0
    assert "pad_token_id=1 but [PAD] is id 0" in caplog.text


def test_released_checkpoints_see_the_padding_they_were_fine_tuned_with(env):
    """With unmasked conv padding (imported checkpoints) every batch is padded to max_length, as in the
    official code, so predictions do not depend on how examples are batched."""
    tok = make_tokenizer()
    torch.manual_seed(0)
    config = ConvBertConfig.from_preset("tiny", vocab_size=tok.get_vocab_size(), mask_conv_padding=False)
    model = ConvBertForSequenceClassification(config, num_labels=1)
    feats = featurize(load_dir_split("stsb", "validation", env / "glue").examples, tok, 32, regression=True)
    cpu = torch.device("cpu")

    def logits(batch_size: int, multiple: int) -> np.ndarray:
        return predict(model, feats, batch_size, cpu, 0, contextlib.nullcontext, multiple)[0]

    multiple = batch_multiple(config, 32, cpu)
    assert multiple == 32 and batch_multiple(ConvBertConfig.from_preset("tiny"), 32, cpu) == 1
    assert np.abs(logits(1, 1) - logits(12, 1)).max() > 1e-5  # padded to the batch's longest: batching shows
    np.testing.assert_allclose(logits(1, multiple), logits(12, multiple), rtol=0, atol=1e-6)


def test_bad_settings_fail_before_training(env, tmp_path):
    """max_length beyond the model's positions, and diverged training: clear errors, no leaderboard file."""
    from convbert.settings import ConfigError

    base = dict(init=str(env / "pretrain"), data=dict(dir=str(env / "glue")), tracking=dict(mode="disabled"),
                trainer=dict(batch_size=8, threads=1))
    with pytest.raises(ConfigError, match="task.max_length=1024 exceeds the model's max_position_embeddings=512"):
        run({**base, "task": dict(kind="glue", name="rte", max_length=1024, epochs=1)}, tmp_path / "long")
    assert not (tmp_path / "long" / "metrics.jsonl").exists()  # nothing was trained
    # so the same job dir takes the corrected settings (it is not held to the failed attempt's)
    run({**base, "task": dict(kind="glue", name="rte", max_length=32, epochs=1)}, tmp_path / "long")
    assert json.loads((tmp_path / "long" / "job.json").read_text())["settings"]["task"]["max_length"] == 32
    for task in ("stsb", "rte"):  # a diverged classifier still predicts a class: its accuracy must not count
        with pytest.raises(FloatingPointError, match=r"training diverged in epoch 1 .*non-finite weights"):
            run({**base, "task": dict(kind="glue", name=task, max_length=32, epochs=1), "optim": dict(lr=1e30)},
                tmp_path / f"nan-{task}")
        assert not (tmp_path / f"nan-{task}" / "submission").exists()
        assert not (tmp_path / f"nan-{task}" / "results.json").exists()


@pytest.mark.parametrize("task, untrained", [("rte", r"ln 2 = 0\.693"), ("stsb", "the mean squared training label")])
def test_divergence_that_stays_finite_fails_the_job_before_any_result(env, tmp_path, task, untrained):
    """lr=1e3: finite weights and losses, but an epoch's mean training loss far above an untrained model's.
    The job fails as diverged (failed.json, exit non-zero) and writes no results.json for the table."""
    out = tmp_path / task
    proc = finetune(f"task={task}", f"init={env / 'pretrain'}", f"data.dir={env / 'glue'}", *QUICK, "optim.lr=1e3",
                    f"hydra.run.dir={out}")
    assert proc.returncode != 0
    pattern = rf"training diverged in epoch 1 \(step \d+\): the mean training loss \S+ is over 10x what an untrained " \
              rf"model scores \({untrained}"
    failure = json.loads((out / "failed.json").read_text())["error"]
    assert re.search(pattern, proc.stderr) and re.search(pattern, failure), proc.stderr[-2000:]
    assert not (out / "results.json").exists() and not list(out.glob("checkpoint/step_*.pt"))


def test_a_finished_busy_or_otherwise_set_job_dir_is_refused_before_hydra_writes_into_it(env, tmp_path):
    out = tmp_path / "run"
    (out / ".hydra").mkdir(parents=True)
    (out / ".hydra" / "overrides.yaml").write_text("- the finished job's own\n")
    (out / "results.json").write_text("{}")
    args = ["task=rte", f"init={env / 'pretrain'}", f"data.dir={env / 'glue'}", *QUICK, f"hydra.run.dir={out}"]
    done = finetune(*args)
    assert done.returncode != 0 and "already holds the results.json of a finished job" in done.stderr
    assert (out / ".hydra" / "overrides.yaml").read_text() == "- the finished job's own\n"  # nothing changed
    (out / "results.json").unlink()
    (out / ".lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "now",
                                            "proc_start": None}))  # this test process: a live job
    busy = finetune(*args)
    assert busy.returncode != 0 and f"in use by another fine-tuning job: pid {os.getpid()}" in busy.stderr
    assert (out / ".hydra" / "overrides.yaml").read_text() == "- the finished job's own\n"
    (out / ".lock").unlink()  # a job that has trained (a checkpoint), rerun under another learning rate
    record_job(out, FinetuneConfig.from_dict({"task": {"kind": "glue", "name": "rte", "max_length": 32},
                                              "init": str(env / "pretrain"), "data": {"dir": str(env / "glue")},
                                              "optim": {"lr": 1e-4}}))
    (out / "checkpoint").mkdir()
    (out / "checkpoint" / "step_00000003.pt").write_bytes(b"")
    changed = finetune(*args, "optim.lr=2e-4")
    assert changed.returncode != 0 and "holds a job with other settings" in changed.stderr, changed.stderr[-2000:]
    assert (out / ".hydra" / "overrides.yaml").read_text() == "- the finished job's own\n"
