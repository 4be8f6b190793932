"""Pretraining data: corpus -> WordPiece tokenizer -> ELECTRA examples -> shards -> torch batches.

The torch-facing classes load lazily so that tokenizing workers stay light.
"""

from typing import Any

from .config import CorpusConfig, DataError, TokenizerConfig
from .shards import check_compatible, check_files, load_shards_tokenizer, prepare, read_manifest

__all__ = [
    "CorpusConfig",
    "DataError",
    "PretrainDataset",
    "ResumableBatches",
    "TokenizerConfig",
    "check_compatible",
    "check_files",
    "load_shards_tokenizer",
    "prepare",
    "read_manifest",
]


def __getattr__(name: str) -> Any:
    if name in ("PretrainDataset", "ResumableBatches"):
        from . import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
