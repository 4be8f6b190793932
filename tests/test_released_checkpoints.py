"""Released transformers checkpoints fine-tune side by side: an ELECTRA discriminator (the layout of
google/electra-small-discriminator: ElectraForPreTraining, keys prefixed "electra.") and a ConvBERT model (the
layout of YituTech/conv-bert-small), both as local transformers-format dirs with their vocab.txt, through the
fine-tuning entry point's library call and into one table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from glue_fixtures import make_benchmark, make_tokenizer, write_glue_dir
from helpers import run_entry

from convbert.data.tokenizer import save

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")


def released_dir(root: Path, kind: str) -> Path:
    """A checkpoint in the released layout and sizes (ELECTRA-small / ConvBERT-small), random weights."""
    root.mkdir(parents=True)
    tok = make_tokenizer()
    save(tok, root)
    (root / "tokenizer.json").unlink()  # released dirs ship vocab.txt
    torch.manual_seed(0)
    sizes = dict(vocab_size=tok.get_vocab_size(), embedding_size=128, hidden_size=256, num_hidden_layers=12,
                 num_attention_heads=4, intermediate_size=1024, pad_token_id=0)
    if kind == "electra":
        transformers.ElectraForPreTraining(transformers.ElectraConfig(**sizes)).save_pretrained(root)
    else:
        transformers.ConvBertModel(transformers.ConvBertConfig(**sizes)).save_pretrained(root)
    return root


@pytest.mark.slow
def test_released_electra_and_convbert_checkpoints_fine_tune(tmp_path):
    glue = write_glue_dir(tmp_path / "glue", make_benchmark(n_train=24, n_dev=12, n_test=6), tasks=["mrpc"])
    for name, kind in (("electra-small-discriminator", "electra"), ("conv-bert-small", "convbert")):
        init, job = released_dir(tmp_path / name, kind), tmp_path / "ft" / name
        run_entry("finetune", "task=mrpc", f"init={init}", f"data.dir={glue}", "task.max_length=32",
                  "trainer.batch_size=8", "task.epochs=1", "trainer.threads=1", "tracking.mode=disabled",
                  "data.predict_test=false", run_dir=job)
        results = json.loads((job / "results.json").read_text())
        model = results["model"]
        assert model["name"] == name and model["preset"] == "small"
        assert model["attention"] == ("self" if kind == "electra" else "mixed")
        assert set(results["metrics"]) == {"accuracy", "f1"}
