"""ConvBERT: model, ELECTRA-style pretraining, GLUE/SQuAD fine-tuning and score tables (no Hydra in here).

`ConvBertConfig` and `ConvBertModel` load on first use, so that light submodules (reports, metrics) do not
pay for importing torch.
"""

from typing import Any

__all__ = ["ConvBertConfig", "ConvBertModel"]


def __getattr__(name: str) -> Any:
    if name == "ConvBertConfig":
        from convbert.config import ConvBertConfig

        return ConvBertConfig
    if name == "ConvBertModel":
        from convbert.model import ConvBertModel

        return ConvBertModel
    raise AttributeError(f"module 'convbert' has no attribute {name!r}")
