"""Shared helpers for the SQuAD tests: fixture paths and a tiny WordPiece tokenizer trained on them."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from convbert.data.tokenizer import count_words, learn_vocab

FIXTURES = Path(__file__).parent / "fixtures" / "squad"
REAL_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad" / "dev-v1.1.json"
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def fixture_texts() -> list[str]:
    texts = []
    for name in sorted(FIXTURES.glob("*.json")):
        for article in json.loads(name.read_text(encoding="utf-8"))["data"]:
            for para in article["paragraphs"]:
                texts.append(para["context"])
                texts.extend(qa["question"] for qa in para["qas"])
    return texts


def train_wordpiece(texts: list[str], vocab_size: int = 400) -> Tokenizer:
    """BERT-style lowercase WordPiece with the project's specials ([PAD]=0 ...)."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # the project's deterministic trainer: HF's WordPieceTrainer breaks count ties in hash order, so its vocab (and
    # what the SQuAD tests train on it) changed from process to process
    vocab = learn_vocab(count_words(tok, texts), vocab_size, min_frequency=0, limit_alphabet=1000)
    assert list(vocab)[: len(SPECIALS)] == SPECIALS
    tok.model = models.WordPiece(vocab, unk_token="[UNK]")
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return tok


@lru_cache(maxsize=1)
def fixture_tokenizer() -> Tokenizer:
    return train_wordpiece(fixture_texts())
