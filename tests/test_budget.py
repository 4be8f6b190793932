"""Pretraining to a compute budget (trainer.budget.flops / hours) and equal-compute comparisons: the steps a
budget gives, the schedule over them, resume, the summary, the score table's note and reproduce."""

from __future__ import annotations

import csv
import json
import math
import signal
import time
from pathlib import Path

import pytest
from glue_fixtures import write_glue_dir
from helpers import compose_resolved, run_entry, run_process, start_process, torchrun

from convbert.pretrain import PREEMPTED_EXIT_CODE, PretrainTrainerConfig
from convbert.report import aggregate
from convbert.report.schema import ModelInfo, Pretraining, Result
from convbert.settings import ConfigError
from convbert.train import load_checkpoint
from pipelines.pretrain import budget_sets_length
from pipelines.reproduce import budget_args

# the smoke scale, self-attention (the simplest FLOP formula): 2 layers, d 128, FFN 512, 600 tokens, 8 x 64
SMALL = ["corpus.max_bytes=60000", "tokenizer.vocab_size=600", "max_seq_length=64", "model.num_hidden_layers=2",
         "model.attention=self", "trainer.batch_size=8", "optim.warmup_steps=1", "trainer.log_every=1",
         "trainer.progress=false", "trainer.threads=1", "tracking=disabled", "trainer.eval_examples=0"]


def hand_step_flops() -> float:
    """docs/design.md §3 by hand for SMALL: 3 x (forward FLOPs of 8 x 64 tokens + 8 x round(0.15 x 64) masked)."""
    T, V, e, L = 64, 600, 128, 2

    def encoder(d: int, ffn: int, proj: int) -> int:  # per token: 2 per weight of q,k,v,o and the FFN; T·d scores
        return proj + L * (2 * (4 * d * d + 2 * d * ffn) + 4 * T * d)

    per_token = encoder(128, 512, 0) + encoder(32, 128, 2 * e * 32) + 2 * (128 * 128 + 128)  # + disc. head
    per_masked = 2 * (32 * e + e * V)  # generator head: to the embedding size, then the tied vocabulary
    return 3.0 * (8 * T * per_token + 8 * 10 * per_masked)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


def train(run_dir: Path, data_dir: Path, *overrides: str) -> dict:
    run_entry("pretrain", *SMALL, f"data_dir={data_dir}", *overrides, run_dir=run_dir)
    return json.loads((run_dir / "pretrain_summary.json").read_text())


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_flop_budget_gives_the_hand_computed_steps_and_schedule(tmp_path, data_dir, capsys):
    per_step = hand_step_flops()
    summary = train(tmp_path / "run", data_dir, f"trainer.budget.flops={7.5 * per_step!r}")  # no max_steps
    assert "gives trainer.max_steps=7" in capsys.readouterr().out
    assert summary["steps"] == 7 and summary["finished"]
    assert summary["nominal_flops"] == pytest.approx(7 * per_step, rel=1e-12)
    assert summary["budget"] == {"kind": "flops", "value": 7.5 * per_step, "max_steps": 7,
                                 "spent": pytest.approx(7 * per_step), "used": pytest.approx(7 / 7.5)}
    assert 0 < summary["flops"] <= summary["nominal_flops"]  # padding is not counted in the logged FLOPs
    logged = rows(tmp_path / "run")
    assert [r["step"] for r in logged] == list(range(1, 8))
    assert logged[-1]["budget_used"] == pytest.approx(7 / 7.5)
    lr = json.loads((tmp_path / "run" / "config.json").read_text())["optim"]["lr"]
    # warm-up over 1 step, then the linear decay reaches 0 where the budget ends
    assert [r["lr"] for r in logged] == pytest.approx([lr * min(1, s) * (1 - s / 7) for s in range(7)])


def test_a_changed_budget_on_resume_changes_the_schedule_like_max_steps(tmp_path, data_dir):
    """As with trainer.max_steps, a resumed run may change its budget (or switch between steps and a budget): the
    schedule is re-derived from the step resumed at."""
    per_step, run = hand_step_flops(), tmp_path / "run"
    train(run, data_dir, f"trainer.budget.flops={4.5 * per_step!r}", "trainer.stop_after=2", "trainer.ckpt_every=2")
    summary = train(run, data_dir, f"trainer.budget.flops={8.5 * per_step!r}", "trainer.ckpt_every=2")
    assert summary["steps"] == 8 and summary["budget"]["value"] == 8.5 * per_step
    logged = rows(run)
    lr = json.loads((run / "config.json").read_text())["optim"]["lr"]
    assert logged[1]["lr"] == pytest.approx(lr * (1 - 1 / 4)) and logged[2]["lr"] == pytest.approx(lr * (1 - 2 / 8))
    summary = train(run, data_dir, "trainer.max_steps=10", "trainer.ckpt_every=2")  # and on to a step count
    assert summary["steps"] == 10 and summary["budget"] is None


def test_budget_settings_are_checked_naming_the_key():
    with pytest.raises(ConfigError, match=r"trainer.max_steps=5 and trainer.budget.flops=1e\+12 are both set"):
        PretrainTrainerConfig(max_steps=5, budget={"flops": 1e12})
    with pytest.raises(ConfigError, match="trainer.budget.flops=1e.* and trainer.budget.hours=2 are both set"):
        PretrainTrainerConfig(max_steps=None, budget={"flops": 1e12, "hours": 2})
    with pytest.raises(ConfigError, match="trainer.budget.hours must be a positive number"):
        PretrainTrainerConfig(max_steps=None, budget={"hours": -1})
    with pytest.raises(ConfigError, match="trainer.max_steps is null and no trainer.budget"):
        PretrainTrainerConfig(max_steps=None)
    with pytest.raises(ConfigError, match="trainer.budget.*flop.*flops"):
        PretrainTrainerConfig(max_steps=None, budget={"flop": 1e12})
    assert PretrainTrainerConfig(max_steps=None, budget={"hours": 1}, stop_after=4).end == 4  # still measuring
    # the command line's length wins over the config files'; both on the command line: the run refuses them
    cfg = compose_resolved("pretrain", ["experiment=tiny-budget", "trainer.max_steps=3"])
    assert cfg["trainer"]["budget"]["flops"] == 5e13
    trainer = budget_sets_length(cfg, ["experiment=tiny-budget", "trainer.max_steps=3"])["trainer"]
    assert trainer["max_steps"] == 3 and trainer["budget"]["flops"] is None
    cfg = compose_resolved("pretrain", ["trainer.budget.hours=2"])
    assert budget_sets_length(cfg, ["trainer.budget.hours=2"])["trainer"]["max_steps"] is None
    both = ["trainer.budget.hours=2", "trainer.max_steps=10"]
    assert budget_sets_length(compose_resolved("pretrain", both), both)["trainer"]["max_steps"] == 10


def test_reproduce_budget_arguments():
    exps = ["convbert-small", "electra-small"]
    assert budget_args({"flops": 1e18, "hours": None, "ratio": {"convbert-small": 0.25}}, exps) == {
        "convbert-small": ["trainer.budget.flops=2.5e+17"], "electra-small": ["trainer.budget.flops=1e+18"]}
    assert budget_args({"flops": None, "hours": None, "ratio": None}, exps) == {e: [] for e in exps}
    for bad, message in [({"flops": 1e18, "hours": 2}, "both set"), ({"ratio": {"convbert-small": 0.5}}, "no budget"),
                         ({"flops": 1e18, "ratio": {"tiny": 0.5}}, "budget.ratio.tiny: not one of the experiments"),
                         ({"flops": 1e18, "ratio": {"electra-small": 0}}, "budget.ratio.electra-small must be"),
                         ({"flop": 1e18}, "unknown key")]:
        with pytest.raises(SystemExit, match=message):
            budget_args(bad, exps)


def test_hours_budget_fixes_records_and_keeps_its_steps(tmp_path, data_dir, capsys):
    """Measured over steps 2-3 (step 1 untimed), the rate is recorded in config.json; the resumed job reads it
    back instead of measuring again, and the run ends at the steps it gives."""
    run = tmp_path / "hours"
    hours = ["trainer.budget.hours=0.0002", "trainer.budget.skip_steps=1", "trainer.budget.measure_steps=2",
             "trainer.ckpt_every=3"]
    train(run, data_dir, *hours, "trainer.stop_after=3")
    recorded = json.loads((run / "config.json").read_text())["trainer"]
    rate = recorded["budget"]["step_device_s"]
    steps = max(3, math.floor(0.0002 * 3600 / rate))
    assert rate > 0 and recorded["max_steps"] is None
    assert (f"measured over steps 2-3, recorded in config.json as trainer.budget.step_device_s) gives "
            f"trainer.max_steps={steps}") in capsys.readouterr().out
    summary = train(run, data_dir, *hours)
    out = capsys.readouterr().out
    assert "measured over" not in out and f"recorded in config.json) gives trainer.max_steps={steps}" in out
    assert summary["steps"] == steps and summary["budget"]["max_steps"] == steps
    assert summary["budget"]["step_device_s"] == rate and summary["budget"]["used"] > 0
    assert [r["step"] for r in rows(run)] == list(range(1, steps + 1))


@pytest.mark.slow  # end to end: a pretraining subprocess, signalled
def test_sigterm_and_resume_keep_a_flop_budget_schedule_bit_identical(tmp_path, data_dir):
    budget = [f"trainer.budget.flops={40.5 * hand_step_flops()!r}", "trainer.ckpt_every=100"]
    run = tmp_path / "stopped"
    proc = start_process(["-m", "pipelines.pretrain", *SMALL, f"data_dir={data_dir}", f"hydra.run.dir={run}",
                          *budget])
    deadline = time.time() + 120
    while not ((run / "metrics.jsonl").exists() and (run / "metrics.jsonl").read_text()) and proc.poll() is None:
        assert time.time() < deadline, "no training rows"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == PREEMPTED_EXIT_CODE, err[-3000:]
    stopped_at = int(next((run / "checkpoints").glob("step_*.pt")).stem.split("_")[1])
    assert 0 < stopped_at < 40
    resumed = train(run, data_dir, *budget)
    whole = train(tmp_path / "whole", data_dir, *budget)
    assert resumed["steps"] == whole["steps"] == 40 and resumed["budget"] == whole["budget"]
    assert [r["lr"] for r in rows(run)] == [r["lr"] for r in rows(tmp_path / "whole")]
    a, b = (load_checkpoint(p / "checkpoints" / "step_00000040.pt") for p in (run, tmp_path / "whole"))
    assert all(a["model"][k].equal(b["model"][k]) for k in a["model"])
    assert a["scheduler"] == b["scheduler"]


def result(name: str, attention: str, pretraining: Pretraining) -> Result:
    model = ModelInfo(name, "tiny", attention, f"runs/pretrain/{name}", name[:12].ljust(12, "0"), "v" * 12)
    return Result("rte", {"accuracy": 50.0}, 1, model, pretraining)


@pytest.mark.parametrize("budgets, says", [
    ((None, None), "Pretrained at equal steps (2000 each), not at equal compute"),
    ((5e13, 5e13), "Pretrained at equal compute: one budget of 5e+13 FLOPs each (trainer.budget.flops)"),
    ((1.25e13, 5e13), "Pretrained to compute budgets in a ratio (a 0.25x, b 1x of 5e+13 FLOPs)"),
])
def test_table_says_at_what_the_models_were_compared(budgets, says):
    records = [Pretraining(1000, 4.0e13, 0.1, "cpu", steps=2000, nominal_flops=4.2e13,
                           budget_kind=None if v is None else "flops", budget_value=v, budget_used=0.99)
               for v in budgets]
    table = aggregate([result("a", "mixed", records[0]), result("b", "self", records[1])])
    assert any(n.startswith(says) for n in table.notes), table.notes
    assert any("a 2000 steps, 4.200e+13 nominal FLOPs; b 2000 steps" in n for n in table.notes)


def test_table_says_nothing_of_compute_for_records_without_steps():
    old = Pretraining(1000, 4.0e13, 0.1, "cpu")  # written before budgets: no steps, no nominal FLOPs
    table = aggregate([result("a", "mixed", old), result("b", "self", old)])
    assert not any("Pretrained" in n for n in table.notes), table.notes


@pytest.mark.slow  # end to end through the reproduce entry point
def test_reproduce_two_experiments_at_one_flop_budget(tmp_path):
    glue = write_glue_dir(tmp_path / "glue", tasks=["rte"])
    pretrain = [*SMALL[:4], *SMALL[5:], f"data_dir={tmp_path / 'data'}"]  # each experiment's own attention
    budget = 6.5 * hand_step_flops()  # ELECTRA's step: 6 steps; ConvBERT's costs less, so it gets more
    proc = run_process(["-m", "pipelines.reproduce", "experiments=[tiny,tiny-electra]", "seeds=[1]",
                        f"budget.flops={budget!r}", f"output_dir={tmp_path / 'out'}",
                        f"pretrain_root={tmp_path / 'pretrain'}", f"data.dir={glue}", "tasks=[rte]",
                        "pretrain_args=[" + ",".join(f'"{a}"' for a in pretrain) + "]",
                        'finetune_args=["task.max_length=32","trainer.batch_size=8","task.epochs=1","optim.lr=3e-4",'
                        '"tracking.mode=disabled"]'], timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    summaries = {run: json.loads((tmp_path / "pretrain" / run / "pretrain_summary.json").read_text())
                 for run in ("tiny-mixed-pydocs", "tiny-self-pydocs")}
    convbert, electra = summaries["tiny-mixed-pydocs"], summaries["tiny-self-pydocs"]
    assert electra["steps"] == 6 and convbert["steps"] > 6
    one_step = max(s["nominal_flops"] / s["steps"] for s in summaries.values())
    assert abs(convbert["nominal_flops"] - electra["nominal_flops"]) <= one_step
    assert all(budget - one_step < s["nominal_flops"] <= budget for s in summaries.values())
    table = tmp_path / "out" / "tiny+tiny-electra" / "table"
    assert f"Pretrained at equal compute: one budget of {budget:.3g} FLOPs each" in (table / "table.md").read_text()
    csv_rows = {r["model"]: r for r in csv.DictReader((table / "table.csv").open())}
    for run, s in summaries.items():
        assert float(csv_rows[run]["pretrain_nominal_flops"]) == pytest.approx(s["nominal_flops"])
        assert csv_rows[run]["pretrain_budget_kind"] == "flops" and int(csv_rows[run]["pretrain_steps"]) == s["steps"]


@pytest.mark.slow  # end to end: torchrun with 2 ranks
def test_hours_budget_under_ddp_gives_every_rank_the_same_steps(tmp_path, data_dir):
    """The ranks' step times are averaged (one all-reduce), so both fix the same max_steps: a rank that stopped
    earlier would leave the other waiting in a collective, and the run would not end."""
    run = tmp_path / "ddp"
    proc = run_process([*torchrun(2), "-m", "pipelines.pretrain", *SMALL, f"data_dir={data_dir}",
                        f"hydra.run.dir={run}", "trainer.budget.hours=0.0003", "trainer.budget.skip_steps=1",
                        "trainer.budget.measure_steps=2"], timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run / "pretrain_summary.json").read_text())
    rate = json.loads((run / "config.json").read_text())["trainer"]["budget"]["step_device_s"]
    assert summary["world_size"] == 2 and summary["steps"] == max(3, math.floor(0.0003 * 3600 / rate))
    assert (run / "checkpoints" / f"step_{summary['steps']:08d}.pt").is_file()
