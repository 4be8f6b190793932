"""`python -m pipelines.reproduce`: tokenize -> pretrain -> GLUE sweep -> table for two experiments (ConvBERT and
its ELECTRA baseline) in one table, and a rerun that reuses it all."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from glue_fixtures import write_glue_dir
from helpers import run_process

pytestmark = pytest.mark.slow  # end to end through the entry point

PRETRAIN = ["corpus.max_bytes=60000", "tokenizer.vocab_size=600", "max_seq_length=64", "model.num_hidden_layers=2",
            "trainer.batch_size=8", "trainer.max_steps=3", "optim.warmup_steps=1", "trainer.progress=false",
            "tracking=disabled"]
RUNS = ("tiny-mixed-pydocs", "tiny-self-pydocs")  # the pretraining run names of experiments tiny, tiny-electra


def reproduce(tmp: Path, glue: Path, lr: str = "3e-4") -> subprocess.CompletedProcess:
    args = [
        "experiments=[tiny,tiny-electra]", "seeds=[1,2]", "smoke_scale.seeds=[1,2]",
        f"output_dir={tmp / 'out'}", f"pretrain_root={tmp / 'pretrain'}", f"data.dir={glue}", "tasks=[rte,stsb]",
        "pretrain_args=[" + ",".join(f'"{a}"' for a in [*PRETRAIN, f"data_dir={tmp / 'data'}"]) + "]",
        f'finetune_args=["task.max_length=32","trainer.batch_size=8","task.epochs=1","optim.lr={lr}",'
        '"tracking.mode=disabled"]',
    ]
    return run_process(["-m", "pipelines.reproduce", *args], timeout=600)


def test_reproduce_two_experiments_one_table_and_rerun_reuses_outputs(tmp_path):
    glue = write_glue_dir(tmp_path / "glue", tasks=["rte", "stsb"])
    first = reproduce(tmp_path, glue)
    assert first.returncode == 0, first.stderr[-5000:]
    out = tmp_path / "out" / "tiny+tiny-electra"
    results = {}
    for run in RUNS:
        assert (tmp_path / "pretrain" / run / "hf" / "model.safetensors").exists()
        for task in ("rte", "stsb"):
            for seed in (1, 2):
                path = out / run / "glue" / f"{task}-seed{seed}" / "results.json"
                results[path] = path.read_bytes()
    table = (out / "table" / "table.md").read_text()
    assert "RTE" in table.upper() and "STS" in table.upper()
    assert "## Comparison: tiny-mixed-pydocs vs tiny-self-pydocs" in table  # same seeds, one table
    # what pretraining bought (smoke scale: random-init rows of both architectures), and what a trivial model
    # and a bag of words score on the same examples
    for row in ("random-custom-mixed", "random-custom-self", "majority class°", "bag of words°"):
        assert f"| {row} |" in table, table
    for run in RUNS:
        assert len(list((out / run / "glue-random-init").glob("*/results.json"))) == 4
    collapsed = [p for p in out.glob("*/*/*/results.json") if json.loads(p.read_text())["collapsed"]]
    log = first.stdout + first.stderr
    assert all(str(p) in log for p in collapsed)  # named at the end, with what to try
    assert not collapsed or "try another optim.lr" in log

    second = reproduce(tmp_path, glue)
    assert second.returncode == 0, second.stderr[-5000:]
    log = second.stdout + second.stderr
    for run in RUNS:
        assert f"{run} rte: all seeds done, reusing" in log and f"{run} stsb: all seeds done, reusing" in log
    assert "pipelines.finetune" not in log

    changed = reproduce(tmp_path, glue, lr="1e-4")  # other fine-tuning settings: not reused, not overwritten
    log = changed.stdout + changed.stderr
    assert changed.returncode != 0 and "other settings" in log and "lr=3e-4" in log and "lr=1e-4" in log
    assert all(path.read_bytes() == data for path, data in results.items())
