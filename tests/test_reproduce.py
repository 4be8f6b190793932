"""`python -m pipelines.reproduce`: tokenize -> pretrain -> GLUE sweep -> table, and a rerun that reuses it all."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from glue_fixtures import write_glue_dir

ROOT = Path(__file__).resolve().parents[1]
PRETRAIN = ["corpus.max_bytes=60000", "tokenizer.vocab_size=600", "max_seq_length=64", "model.num_hidden_layers=2",
            "trainer.batch_size=8", "trainer.max_steps=3", "optim.warmup_steps=1", "trainer.progress=false",
            "tracking=disabled"]


def reproduce(tmp: Path, glue: Path, lr: str = "3e-4") -> subprocess.CompletedProcess:
    args = [
        f"output_dir={tmp / 'out'}", f"pretrain_dir={tmp / 'pretrain'}", f"glue_dir={glue}", "tasks=[rte,stsb]",
        "pretrain_args=[" + ",".join(f'"{a}"' for a in [*PRETRAIN, f"data_dir={tmp / 'data'}"]) + "]",
        f'finetune_args=["max_length=32","batch_size=8","task.epochs=1","lr={lr}","tracking.mode=disabled"]',
    ]
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "pipelines.reproduce", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_reproduce_chain_and_rerun_reuses_outputs(tmp_path):
    glue = write_glue_dir(tmp_path / "glue", tasks=["rte", "stsb"])
    first = reproduce(tmp_path, glue)
    assert first.returncode == 0, first.stderr[-5000:]
    out = tmp_path / "out" / "tiny-default"
    for task in ("rte", "stsb"):
        assert (out / "glue" / f"{task}-seed1" / "results.json").exists()
    table = (out / "table" / "table.md").read_text()
    assert "RTE" in table.upper() and "STS" in table.upper()
    assert (tmp_path / "pretrain" / "hf" / "model.safetensors").exists()

    second = reproduce(tmp_path, glue)
    assert second.returncode == 0, second.stderr[-5000:]
    log = second.stdout + second.stderr
    assert "rte: all seeds done, reusing" in log and "stsb: all seeds done, reusing" in log
    assert "pipelines.finetune" not in log

    results = {t: (out / "glue" / f"{t}-seed1" / "results.json").read_bytes() for t in ("rte", "stsb")}
    changed = reproduce(tmp_path, glue, lr="1e-4")  # other fine-tuning settings: not reused, not overwritten
    log = changed.stdout + changed.stderr
    assert changed.returncode != 0 and "other settings" in log and "lr=3e-4" in log and "lr=1e-4" in log
    assert all((out / "glue" / f"{t}-seed1" / "results.json").read_bytes() == b for t, b in results.items())
