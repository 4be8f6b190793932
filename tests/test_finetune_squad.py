"""Tiny SQuAD 1.1 / 2.0 fine-tuning jobs through the Hydra entry point (python -m pipelines.finetune)."""

import contextlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_entry, run_process
from squad_fixtures import FIXTURES, fixture_tokenizer

from convbert.config import ConvBertConfig
from convbert.finetune import FinetuneTrainerConfig, fit, seed_everything
from convbert.finetune.sampler import LengthBucketSampler
from convbert.model import ConvBertForQuestionAnswering, ConvBertModel
from convbert.squad.data import gold_answers, load_squad_json
from convbert.squad.features import FeatureConfig, build_features
from convbert.squad.postprocess import PostprocessConfig, postprocess
from convbert.squad.run import collate, predict_logits, qa_loss, score
from convbert.squad.scoring import score_squad_v1, score_squad_v2
from convbert.train.optim import OptimConfig

TINY = ["task.max_length=48", "++task.max_query_length=12", "++task.doc_stride=16", "trainer.batch_size=16",
        "trainer.eval_batch_size=32", "trainer.device=cpu", "trainer.precision=fp32", "trainer.threads=1",
        "tracking.mode=disabled"]
V2_KEYS = {"exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1", "best_exact",
           "best_exact_thresh", "best_f1", "best_f1_thresh"}


@pytest.fixture(scope="module")
def init_dir(tmp_path_factory) -> Path:
    """A transformers-format tiny ConvBERT with the tokenizer that travels with it."""
    d = tmp_path_factory.mktemp("init")
    tok = fixture_tokenizer()
    ConvBertModel(ConvBertConfig.from_preset("tiny", vocab_size=tok.get_vocab_size())).to_hf(d)
    tok.save(str(d / "tokenizer.json"))
    return d


def _finetune(args: list[str]) -> subprocess.CompletedProcess:
    return run_process(["-m", "pipelines.finetune", *args], timeout=300)


@pytest.fixture(scope="module")
def sweep(init_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sweep")
    proc = _finetune(["-m", "task=squad1,squad2", f"init={init_dir}", f"data.dir={FIXTURES}",
                      "task.epochs=2", *TINY, f"hydra.sweep.dir={out}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _results(sweep: Path, task: str) -> dict:
    (run_dir,) = sweep.glob(f"{task}-seed1-*")
    return json.loads((run_dir / "results.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("task, version", [("squad1", "1.1"), ("squad2", "2.0")])
def test_results_schema_and_files(sweep, init_dir, task, version):
    res = _results(sweep, task)
    run_dir = Path(res["run_dir"])
    assert res["task"] == task and res["seed"] == 1
    assert set(res["metrics"]) == (V2_KEYS if version == "2.0" else {"exact", "f1"})
    for k, v in res["metrics"].items():
        assert isinstance(v, float), (k, v)
        if not k.endswith("_thresh"):
            assert 0.0 <= v <= 100.0
    assert res["model"]["vocab_id"] and res["model"]["init"] == str(init_dir.resolve())
    assert {"name", "preset", "attention", "init", "checkpoint_id", "vocab_id"} <= set(res["model"])
    assert res["model"]["preset"] == "tiny" and res["pretraining"] is None
    assert res["steps"] > 0 and res["examples_seen"] >= res["steps"] and res["flops"] > 0
    assert [h["epoch"] for h in res["history"]] == [1, 2] and "exact" in res["history"][1]
    assert res["hparams"]["max_length"] == 48 and res["hparams"]["doc_stride"] == 16
    assert (run_dir / ".hydra" / "config.yaml").exists() and (run_dir / "metrics.jsonl").exists()

    examples, _ = load_squad_json(FIXTURES / f"dev-v{version}.json")
    preds = json.loads(Path(res["predictions_file"]).read_text())
    assert set(preds) == {ex.qid for ex in examples}
    for ex in examples:  # answers are cut out of the context
        assert preds[ex.qid] in ex.context
    gold = gold_answers(examples)
    if version == "1.1":
        again = score_squad_v1(gold, preds)
    else:  # predictions.json applies the threshold; rescoring it reproduces the reported numbers
        odds = json.loads((run_dir / "null_odds.json").read_text())
        assert set(odds) == set(preds)
        assert all(preds[q] == "" for q, o in odds.items() if o > 0.0)
        again = score_squad_v2(gold, preds)
        spans = json.loads((run_dir / "best_spans.json").read_text())
        sweep_scores = score_squad_v2(gold, spans, odds, 0.0)
        assert sweep_scores["best_f1"] == pytest.approx(res["metrics"]["best_f1"])
        assert res["metrics"]["best_f1"] >= res["metrics"]["f1"] - 1e-9
    assert again["exact"] == pytest.approx(res["metrics"]["exact"])
    assert again["f1"] == pytest.approx(res["metrics"]["f1"])


@pytest.mark.slow
def test_bad_training_file_fails_with_clear_error(init_dir, tmp_path):
    data = tmp_path / "squad"
    data.mkdir()
    shutil.copy(FIXTURES / "dev-v1.1.json", data / "dev-v1.1.json")
    (data / "train-v1.1.json").write_text('{"version": "1.1", "data": [\n  {"title": "x",,}\n]}')
    run_dir = tmp_path / "run"
    with pytest.raises(ValueError, match="train-v1.1.json: invalid JSON at line 2"):
        run_entry("finetune", "task=squad1", f"init={init_dir}", f"data.dir={data}", *TINY, run_dir=run_dir)
    failure = json.loads((run_dir / "failed.json").read_text())
    assert "train-v1.1.json: invalid JSON at line 2" in failure["error"]
    assert not (run_dir / "results.json").exists()



@pytest.mark.slow
def test_training_memorises_spans():
    """The SQuAD loss, batching and post-processing fit together: a tiny model memorises 4 spans."""
    torch.set_num_threads(1)  # tiny matrices: more threads oversubscribe small CI machines (conftest restores it)
    seed_everything(0)
    tok = fixture_tokenizer()
    examples = [ex for ex in load_squad_json(FIXTURES / "dev-v2.0.json")[0] if ex.title == "Bridges"]
    feats, _ = build_features(examples, tok, FeatureConfig(64, 16, 32), training=True)
    batch = collate(feats, list(range(len(feats))), pad_id=0)
    # spans may point at [CLS] or the window's context only (not the question, not the last [SEP])
    assert batch["answer_mask"].sum(1).tolist() == [n + 1 for n in feats.span_length]
    assert not batch["answer_mask"][torch.arange(len(feats)), batch["attention_mask"].sum(1) - 1].any()

    cfg = ConvBertConfig.from_preset("tiny", vocab_size=tok.get_vocab_size(), hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0)
    model = ConvBertForQuestionAnswering(cfg, answerable=True)
    sampler = LengthBucketSampler(np.array([len(x) for x in feats.input_ids]), 16, shuffle=True, seed=0)

    def batches(epoch):
        sampler.set_epoch(epoch)
        for idx in sampler:
            yield collate(feats, idx, 0)

    optim = OptimConfig(lr=1e-3, warmup_fraction=0.1)
    result = fit(model, batches, len(sampler), 25, lambda m, b: qa_loss(m, b, 0.5), optim,
                 FinetuneTrainerConfig(precision="fp32"), torch.device("cpu"))
    assert result.history[-1]["train_loss"] < 0.3 * result.history[0]["train_loss"]
    s, e, a, flops = predict_logits(model, feats, 32, torch.device("cpu"), 0, contextlib.nullcontext)
    assert a is not None and flops > 0
    preds = postprocess(examples, feats, s, e, a, PostprocessConfig(), version2=True)
    assert score(examples, preds, True, 0.0)["HasAns_exact"] == 100.0
    assert all(preds.best_spans[ex.qid] == ex.answers[0].text for ex in examples if ex.answers)
