"""Where a fine-tuning job starts: one of our pretraining run dirs, a transformers-format directory (or
hub id), or random weights -> backbone, tokenizer and provenance (`load_init`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from convbert.config import PRESETS, ConvBertConfig
from convbert.finetune.config import is_random_init
from convbert.io import read_json, sha256_prefix
from convbert.model import ConvBertModel

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
PRETRAIN_SUMMARY_KEYS = ("tokens", "flops", "device_hours", "device")


class InitError(ValueError):
    """The init checkpoint / tokenizer cannot be used: missing files, vocab-model mismatch, ..."""


# ---------------------------------------------------------------------------------------------- init
@dataclass
class Pretrained:
    backbone: ConvBertModel
    config: ConvBertConfig
    tokenizer: Tokenizer
    model_info: dict[str, Any]  # results.json "model": name, preset, attention, init, checkpoint_id, vocab_id
    pretraining: dict[str, Any] | None  # results.json "pretraining" (from pretrain_summary.json)


def vocab_id(tokenizer: Tokenizer) -> str:
    """Hash of the vocabulary as vocab.txt text (one token per line, in id order): the same id whether
    the vocab came from a tokenizer.json or a vocab.txt."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return sha256_prefix("".join(t + "\n" for t, _ in vocab).encode("utf-8"))


def match_preset(config: ConvBertConfig) -> str:
    """Name of the size preset the config matches (architecture keys only), else 'custom'."""
    for name, keys in PRESETS.items():
        if all(getattr(config, k) == v for k, v in keys.items()):
            return name
    return "custom"


def tokenizer_file(path: str | Path) -> Path:
    """tokenizer.json or vocab.txt: the file itself, or the one in a directory (tokenizer.json first)."""
    path = Path(path).expanduser()
    if path.is_dir():
        found = [path / n for n in ("tokenizer.json", "vocab.txt") if (path / n).is_file()]
        if not found:
            raise InitError(f"{path}: no tokenizer.json or vocab.txt (the vocabulary must travel with "
                            f"the model)")
        path = found[0]
    if not path.is_file():
        raise InitError(f"vocabulary {path}: no such file")
    return path


def load_tokenizer(path: str | Path) -> Tokenizer:
    """tokenizer.json, vocab.txt (uncased BERT WordPiece), or a directory holding one of them."""
    from convbert.data.tokenizer import bert_wordpiece, read_vocab_txt

    path = tokenizer_file(path)
    try:
        if path.suffix == ".json":
            tok = Tokenizer.from_file(str(path))
        else:
            tok = bert_wordpiece(read_vocab_txt(path), lowercase=True)
    except Exception as e:
        raise InitError(f"{path}: cannot load tokenizer ({e})") from e
    for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]"):
        if tok.token_to_id(t) is None:
            raise InitError(f"{path}: vocabulary has no {t} token (a BERT WordPiece vocab is required)")
    return tok


def _check_vocab(tokenizer: Tokenizer, config: ConvBertConfig, tok_src: str, model_src: str) -> None:
    n = tokenizer.get_vocab_size()
    if n != config.vocab_size:
        raise InitError(
            f"vocabulary/model mismatch: {tok_src} has {n} tokens but {model_src} has vocab_size="
            f"{config.vocab_size}; fine-tune with the vocabulary the model was pretrained with"
        )
    pad = tokenizer.token_to_id("[PAD]")
    if pad != config.pad_token_id:  # e.g. transformers' ConvBertConfig default (1) left in a saved config
        log.warning("%s says pad_token_id=%d but [PAD] is id %d in %s: padding with %d", model_src,
                    config.pad_token_id, pad, tok_src, pad)
        config.pad_token_id = pad  # only batch padding reads it: the embeddings have no padding_idx


def _weights_file(hf_dir: Path) -> Path:
    for name in WEIGHT_FILES:
        if (hf_dir / name).is_file():
            return hf_dir / name
    raise InitError(f"{hf_dir}: no weights ({', '.join(WEIGHT_FILES)})")


def _read_pretrain_summary(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "pretrain_summary.json"
    if not path.is_file():
        log.warning("%s: no pretrain_summary.json; results will have pretraining=null", run_dir)
        return None
    summary = read_json(path, error=InitError)
    missing = [k for k in PRETRAIN_SUMMARY_KEYS if k not in summary]
    if missing:
        raise InitError(f"{path}: missing keys {missing}")
    return {**{k: summary[k] for k in PRETRAIN_SUMMARY_KEYS}, **_budget_record(summary)}


def _budget_record(summary: dict[str, Any]) -> dict[str, Any]:
    """Steps, nominal FLOPs and the compute budget of a pretraining run, flattened into results.json's
    "pretraining" (summaries written before budgets existed have none of them)."""
    out = {k: summary[k] for k in ("steps", "nominal_flops") if summary.get(k) is not None}
    budget = summary.get("budget")
    if isinstance(budget, dict):
        out |= {"budget_kind": budget.get("kind"), "budget_value": budget.get("value"),
                "budget_used": budget.get("used")}
    return out


def _download(repo_id: str) -> Path:
    """A transformers-format model from the HF hub (config, weights, vocab only)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, allow_patterns=["config.json", *WEIGHT_FILES, "vocab.txt",
                                                                "tokenizer.json", "*.safetensors"]))
    except Exception as e:
        raise InitError(f"init={repo_id!r} is not a local directory and could not be downloaded from the "
                        f"HF hub ({type(e).__name__}: {e})") from e


def _random_init(preset: str | None, tokenizer: str | Path | None, overrides: dict[str, Any]) -> Pretrained:
    """Random weights of the preset (with overrides) for the given vocabulary: no pretraining."""
    if not preset or not tokenizer:
        raise InitError("random init (init=null) needs both a model preset and a vocabulary "
                        "(e.g. preset=small vocab=/path/to/vocab.txt)")
    tok = load_tokenizer(tokenizer)
    config = ConvBertConfig.from_preset(preset, vocab_size=tok.get_vocab_size(), **overrides)
    _check_vocab(tok, config, str(tokenizer_file(tokenizer)), f"preset {preset}")
    arch = match_preset(config)  # the preset with overrides may be another size
    info = dict(name=f"random-{arch}-{config.attention}", preset=arch, attention=config.attention, init="random",
                init_kind="random", checkpoint_id="random", vocab_id=vocab_id(tok))
    return Pretrained(ConvBertModel(config), config, tok, info, None)


def load_init(
    init: str | Path | None,
    preset: str | None = None,
    tokenizer: str | Path | None = None,
    config_overrides: dict[str, Any] | None = None,
) -> Pretrained:
    """Resolve the starting point of fine-tuning.

    init = a pretraining run dir (has hf/ + tokenizer.json/vocab.txt + pretrain_summary.json), a
    transformers-format dir (config.json + weights + vocab.txt/tokenizer.json; a hub id such as
    YituTech/conv-bert-small is downloaded), or None/"random" (no pretraining: needs preset + tokenizer).
    `tokenizer` overrides the vocabulary that travelled with the model (sizes must still agree).
    """
    overrides = dict(config_overrides or {})
    if is_random_init(init):
        return _random_init(preset, tokenizer, overrides)
    path, hub_id = Path(str(init)).expanduser(), None
    if not path.exists():
        if str(init).startswith((".", "/", "~")) or str(init).count("/") != 1:
            raise InitError(f"init={init}: no such directory")
        path, hub_id = _download(str(init)), str(init)
    if not path.is_dir():
        raise InitError(f"init={init}: not a directory")
    if (path / "hf" / "config.json").is_file():  # one of our pretraining run dirs
        kind, hf_dir, pretraining = "run_dir", path / "hf", _read_pretrain_summary(path)
    elif (path / "config.json").is_file():
        kind, hf_dir, pretraining = "hf", path, None
        if (path / "pretrain_summary.json").is_file():  # e.g. init=<run dir>/hf
            pretraining = _read_pretrain_summary(path)
        elif (path.parent / "pretrain_summary.json").is_file():
            pretraining = _read_pretrain_summary(path.parent)
    else:
        raise InitError(f"init={init}: neither a pretraining run dir (hf/config.json) nor a "
                        f"transformers-format model dir (config.json)")
    weights = _weights_file(hf_dir)
    if tokenizer:
        tok_src = Path(tokenizer)
    else:  # the vocabulary that travelled with the model: next to the weights, or in their run dir
        where = [path, hf_dir] + ([path.parent] if kind == "hf" and path.name == "hf" else [])
        tok_src = next((d for d in where if (d / "tokenizer.json").is_file() or (d / "vocab.txt").is_file()),
                       path)
    tok = load_tokenizer(tok_src)
    try:
        backbone = ConvBertModel.from_hf(hf_dir, **overrides)
    except (ValueError, FileNotFoundError, KeyError) as e:
        raise InitError(f"init={init}: cannot load the model ({e})") from e
    config = backbone.config
    _check_vocab(tok, config, str(tokenizer_file(tok_src)), str(hf_dir / "config.json"))
    name = path.name if kind == "run_dir" or path.name != "hf" else path.parent.name
    info = dict(name=hub_id.split("/")[-1] if hub_id else name,  # a hub snapshot dir is named by its commit
                preset=match_preset(config), attention=config.attention, init=hub_id or str(path.resolve()),
                init_kind=kind, checkpoint_id=sha256_prefix(weights), vocab_id=vocab_id(tok))
    return Pretrained(backbone, config, tok, info, pretraining)
