"""Every conf/experiment/ file runs end to end at tiny size: pretraining (with its hf/ export) -> GLUE
fine-tuning on a fixture -> one score table comparing a ConvBERT experiment with its ELECTRA baseline. An
experiment that cannot finish (e.g. a setting the export cannot write) fails here, not after days of training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from glue_fixtures import make_benchmark, write_glue_dir
from helpers import compose_resolved, run_entry

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
# each experiment keeps its attention kind, FFN groups and recipe; sizes, data and steps become tiny
TINY_PRETRAIN = [
    "corpus=pydocs", "corpus.max_bytes=60000", "tokenizer=wordpiece", "tokenizer.vocab_size=600",
    "max_seq_length=32", "num_workers=1", "tracking=disabled",
    "model.hidden_size=32", "model.embedding_size=16", "model.num_hidden_layers=1",
    "model.num_attention_heads=4", "model.intermediate_size=64",
    "trainer.device=cpu", "trainer.batch_size=4", "trainer.grad_accum=1", "trainer.max_steps=2",
    "optim.warmup_steps=1", "trainer.log_every=1", "trainer.ckpt_every=2", "trainer.progress=false",
]
TINY_FINETUNE = ["task=rte", "task.max_length=32", "trainer.batch_size=8", "trainer.eval_batch_size=16",
                 "task.epochs=1", "trainer.threads=1", "tracking.mode=disabled", "data.predict_test=false",
                 "optim.lr=3e-4"]
SEEDS = (1, 2)


def test_experiments_are_the_expected_pairs():
    assert {"convbert-small", "electra-small", "convbert-base", "electra-base", "tiny", "tiny-electra"} <= set(
        EXPERIMENTS)
    for name in EXPERIMENTS:  # every ConvBERT experiment has its same-size baseline
        if name.startswith("convbert-"):
            assert name.replace("convbert-", "electra-") in EXPERIMENTS


@pytest.mark.slow
def test_every_experiment_pretrains_finetunes_and_reaches_the_table(tmp_path):
    glue = write_glue_dir(tmp_path / "glue", make_benchmark(n_train=24, n_dev=12, n_test=6), tasks=["rte"])
    for name in EXPERIMENTS:
        overrides = [f"experiment={name}", *TINY_PRETRAIN, f"name={name}", f"data_dir={tmp_path / 'data'}"]
        run_dir = tmp_path / "pretrain" / name
        attention = compose_resolved("pretrain", overrides, run_dir=run_dir)["model"]["attention"]
        run_entry("pretrain", *overrides, run_dir=run_dir)
        summary = json.loads((run_dir / "pretrain_summary.json").read_text())
        assert summary["steps"] == 2 and (run_dir / "hf" / "model.safetensors").is_file(), name
        exported = json.loads((run_dir / "hf" / "config.json").read_text())
        assert exported["model_type"] == ("convbert" if attention == "mixed" else "electra"), name
        for seed in SEEDS:
            job = tmp_path / "finetune" / name / f"rte-seed{seed}"
            run_entry("finetune", *TINY_FINETUNE, f"init={run_dir}", f"data.dir={glue}", f"seed={seed}", run_dir=job)
            results = json.loads((job / "results.json").read_text())
            assert results["model"]["attention"] == attention, name

    run_entry("table", f"runs_dir={tmp_path / 'finetune'}", f"output_dir={tmp_path / 'table'}",
              "compare=[convbert-small,electra-small]", "formats=[md,csv]", run_dir=tmp_path / "table")
    md = (tmp_path / "table" / "table.md").read_text()
    for name in EXPERIMENTS:
        assert name in md, name
    assert "## Comparison: convbert-small vs electra-small" in md
    rows = [line.split(",") for line in (tmp_path / "table" / "comparison.csv").read_text().splitlines()]
    rte = next(r for r in rows if r[2] == "rte")
    assert rte[:2] == ["convbert-small", "electra-small"] and rte[-3:-1] == ["2", "2"]  # seeds per side
