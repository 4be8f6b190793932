"""Typed views of the `corpus` and `tokenizer` config groups (plain dicts in, dataclasses out)."""

from __future__ import annotations

import codecs
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from convbert.settings import check_bools, check_ints
from convbert.settings import from_mapping as _from_mapping

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # [PAD] must be id 0 (model pad_token_id)


class DataError(ValueError):
    """Bad corpus, tokenizer or data directory; the message names the file, line or key at fault."""


@dataclass
class CorpusConfig:
    name: str | None = None  # first part of the output directory name (default: the source)
    source: Literal["pydocs", "text", "hub"] = "pydocs"
    # size limits for quick runs/tests: stop after this many documents / after the document that
    # reaches this many bytes of text (UTF-8)
    max_documents: int | None = None
    max_bytes: int | None = None
    # source=text: files, directories or globs (`**` allowed); plain text or .gz
    paths: list[str] = field(default_factory=list)
    doc_boundary: Literal["blank_line", "file"] = "blank_line"
    encoding: str = "utf-8"
    on_decode_error: Literal["fail", "skip"] = "fail"
    # source=hub: arguments of datasets.load_dataset
    dataset: str | None = None
    config_name: str | None = None
    split: str = "train"
    revision: str | None = None
    data_files: Any = None
    streaming: bool = False
    cache_dir: str | None = None
    text_column: str = "text"
    rows: Literal["documents", "lines"] = "documents"  # a row is a whole document, or one line of one
    # a unit (line, paragraph) that does not fit in the rest of an example: split across consecutive examples,
    # or truncate as ELECTRA's builder does (for exact replication; loses text: the build reports how much)
    overflow: Literal["split", "truncate"] = "split"

    def __post_init__(self) -> None:
        _check_choice("corpus", "source", self.source, ("pydocs", "text", "hub"))
        _check_choice("corpus", "doc_boundary", self.doc_boundary, ("blank_line", "file"))
        _check_choice("corpus", "on_decode_error", self.on_decode_error, ("fail", "skip"))
        _check_choice("corpus", "rows", self.rows, ("documents", "lines"))
        _check_choice("corpus", "overflow", self.overflow, ("split", "truncate"))
        self.name = self.name or self.source
        if "/" in self.name or self.name.startswith("."):
            raise DataError(f"corpus.name={self.name!r} must be a plain directory-name prefix")
        check_ints(self, "corpus", ("max_documents", "max_bytes"), nullable=True, error=DataError)
        check_bools(self, "corpus", ("streaming",), error=DataError)
        try:
            codecs.lookup(self.encoding)
        except (LookupError, TypeError):
            raise DataError(f"corpus.encoding={self.encoding!r} is not an encoding Python knows") from None
        if isinstance(self.paths, str):
            self.paths = [self.paths]
        self.paths = [str(p) for p in self.paths]
        if self.source == "text" and not self.paths:
            raise DataError("corpus.paths is empty: source=text needs at least one file, directory or glob")
        if self.source == "hub" and not self.dataset:
            raise DataError("corpus.dataset is not set: source=hub needs a datasets.load_dataset path")


@dataclass
class TokenizerConfig:
    kind: Literal["wordpiece", "pretrained"] = "wordpiece"
    # kind=wordpiece: train on the corpus itself
    vocab_size: int = 8192  # the vocabulary is padded with [unusedN] tokens up to exactly this size
    lowercase: bool = True
    min_frequency: int = 2
    limit_alphabet: int = 1000
    max_train_bytes: int | None = None  # train on at most this much text (null: the whole corpus)
    # deterministic: our merge loop, identical vocab on every build; hf: the HF WordPiece trainer
    # (parallel Rust, faster on GB-scale text, but ties break in hash order so rebuilds can differ)
    trainer: Literal["deterministic", "hf"] = "deterministic"
    # kind=pretrained: a BERT vocab.txt, a tokenizer.json, a directory with either, or a hub id
    path: str | None = None

    def __post_init__(self) -> None:
        _check_choice("tokenizer", "kind", self.kind, ("wordpiece", "pretrained"))
        _check_choice("tokenizer", "trainer", self.trainer, ("deterministic", "hf"))
        check_bools(self, "tokenizer", ("lowercase",), error=DataError)
        check_ints(self, "tokenizer", ("vocab_size", "min_frequency", "limit_alphabet"), error=DataError)
        check_ints(self, "tokenizer", ("max_train_bytes",), nullable=True, error=DataError)
        if self.kind == "wordpiece" and self.vocab_size <= len(SPECIAL_TOKENS):
            raise DataError(
                f"tokenizer.vocab_size={self.vocab_size} is too small: it must exceed the "
                f"{len(SPECIAL_TOKENS)} special tokens {list(SPECIAL_TOKENS)} plus the corpus alphabet"
            )
        if self.kind == "pretrained" and not self.path:
            raise DataError("tokenizer.path is not set: kind=pretrained needs a vocab.txt or tokenizer.json")


def _check_choice(group: str, key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise DataError(f"{group}.{key}={value!r} is not one of {list(choices)}")


def from_mapping(cls: type, group: str, values: Mapping[str, Any] | Any) -> Any:
    """`convbert.settings.from_mapping` raising DataError (the corpus/tokenizer groups' error type)."""
    return _from_mapping(cls, group, values, error=DataError)
