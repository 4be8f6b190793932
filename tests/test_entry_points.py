"""The shared smoke experiment runs through the pretraining entry point, in-process (helpers.run_entry)."""

from __future__ import annotations

import json

import pytest
from helpers import run_entry


@pytest.mark.slow
def test_smoke_experiment_pretrains(tmp_path):
    run_entry("pretrain", "experiment=smoke", f"data_dir={tmp_path / 'data'}", run_dir=tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "pretrain_summary.json").read_text())
    config = json.loads((tmp_path / "run" / "hf" / "config.json").read_text())
    assert summary["steps"] == 3 and config["num_hidden_layers"] == 2 and config["vocab_size"] == 600
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 3  # trainer.log_every=1
