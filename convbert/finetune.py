"""Fine-tuning machinery shared by the GLUE and SQuAD tasks (no Hydra here).

- `load_init`: the starting point of a fine-tuning job: one of our pretraining run dirs, a
  transformers-format directory (or hub id), or random weights -> backbone, tokenizer, provenance.
- `fit`: epoch loop over batches with a task loss, AdamW + layer-wise lr decay, linear warmup/decay,
  mixed precision, an eval callback after each epoch, tracking.
- `FinetuneHParams.from_cfg`, `resolve_lr`, `seed_everything`, `forward_flops`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from convbert.config import PRESETS, ConvBertConfig
from convbert.model import ConvBertModel
from convbert.train import Precision, Tracker, build_optimizer, linear_schedule
from convbert.train.optim import check_layer_decay_variant
from convbert.train.precision import DTYPES

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


def sha256_prefix(data: bytes | Path, n: int = 12) -> str:
    h = hashlib.sha256()
    if isinstance(data, Path):
        with open(data, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    else:
        h.update(data)
    return h.hexdigest()[:n]


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
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InitError(f"{path}: invalid JSON ({e})") from e
    missing = [k for k in PRETRAIN_SUMMARY_KEYS if k not in summary]
    if missing:
        raise InitError(f"{path}: missing keys {missing}")
    return {k: summary[k] for k in PRETRAIN_SUMMARY_KEYS}


def _download(repo_id: str) -> Path:
    """A transformers-format model from the HF hub (config, weights, vocab only)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, allow_patterns=["config.json", *WEIGHT_FILES, "vocab.txt",
                                                                "tokenizer.json", "*.safetensors"]))
    except Exception as e:
        raise InitError(f"init={repo_id!r} is not a local directory and could not be downloaded from the "
                        f"HF hub ({type(e).__name__}: {e})") from e


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
    if init is None or str(init).lower() in ("random", "none", ""):
        if not preset or not tokenizer:
            raise InitError("random init (init=null) needs both a model preset and a vocabulary "
                            "(e.g. preset=small vocab=/path/to/vocab.txt)")
        tok = load_tokenizer(tokenizer)
        config = ConvBertConfig.from_preset(preset, vocab_size=tok.get_vocab_size(), **overrides)
        _check_vocab(tok, config, str(tokenizer_file(tokenizer)), f"preset {preset}")
        info = dict(name=f"random-{preset}", preset=preset, attention=config.attention, init="random",
                    init_kind="random", checkpoint_id="random", vocab_id=vocab_id(tok))
        return Pretrained(ConvBertModel(config), config, tok, info, None)

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


def load_init_from_cfg(cfg: dict[str, Any]) -> Pretrained:
    """load_init with the fine-tuning config's keys: init, preset, vocab, model_overrides."""
    return load_init(cfg.get("init"), cfg.get("preset"), cfg.get("vocab"), cfg.get("model_overrides"))


# ------------------------------------------------------------------------------------------ training
def resolve_lr(cfg: dict[str, Any], pre: Pretrained) -> float:
    """cfg["lr"] when set, else cfg["lr_by_preset"][the model's preset] (SPEC §4 per-size defaults)."""
    if cfg.get("lr") is not None:
        return float(cfg["lr"])
    table = cfg.get("lr_by_preset") or {}
    preset = pre.model_info["preset"]
    if preset not in table:
        raise ValueError(f"no default learning rate for model preset {preset!r} (lr_by_preset has "
                         f"{sorted(table)}); set lr=...")
    return float(table[preset])


@dataclass
class FinetuneHParams:
    """Optimisation recipe (SPEC §4 defaults: ELECTRA/ConvBERT's configure_finetuning.py)."""

    lr: float = 3e-4
    layer_decay: float | None = 0.8  # None: no layer-wise decay
    layer_decay_variant: str = "electra"  # electra: top layer gets decay**2 (released code); standard: **1
    weight_decay: float = 0.01
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-6
    adam_bias_correction: bool = False  # False: ELECTRA's optimizer, as the paper's recipes assume
    warmup_fraction: float = 0.1
    epochs: int = 3
    max_grad_norm: float = 1.0
    precision: str = "fp32"  # fp32 | bf16 | fp16 | auto (bf16 on a bf16-capable GPU, else fp32)
    max_steps: int | None = None  # stop early (quick runs, benchmarks)

    @classmethod
    def from_cfg(cls, cfg: dict[str, Any]) -> FinetuneHParams:
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: cfg[k] for k in names if k in cfg}
        if "adam_betas" in kw:
            kw["adam_betas"] = tuple(kw["adam_betas"])
        hp = cls(**kw)
        if hp.lr <= 0 or hp.epochs < 1 or not 0 <= hp.warmup_fraction < 1:
            raise ValueError(f"invalid fine-tuning hyper-parameters: lr={hp.lr}, epochs={hp.epochs}, "
                             f"warmup_fraction={hp.warmup_fraction}")
        if hp.layer_decay is not None and not 0 < hp.layer_decay <= 1:
            raise ValueError(f"layer_decay must be in (0, 1] or null, got {hp.layer_decay}")
        check_layer_decay_variant(hp.layer_decay_variant)
        if hp.precision not in ("auto", *DTYPES):
            raise ValueError(f"precision must be auto or one of {sorted(DTYPES)}, got {hp.precision!r}")
        return hp


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_precision(kind: str, device: torch.device) -> str:
    if kind != "auto":
        return kind
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def forward_flops(config: ConvBertConfig, n_params: int, batch: int, length: int) -> float:
    """Forward FLOPs of one [batch, length] pass: 2 per non-embedding parameter per token plus the
    attention products (QK^T, AV: 4·T·N·d_h per token and layer) and the lightweight conv
    (2·k·N·d_h per token and layer). Backward ~ 2x forward."""
    inner = config.num_sa_heads * config.attention_head_size
    conv = 2 * config.conv_kernel_size * inner if config.attention == "mixed" else 0
    per_layer = 4 * length * inner + conv
    return float(batch * length * (2 * n_params + config.num_hidden_layers * per_layer))


def count_flop_params(model: torch.nn.Module) -> int:
    """Parameters that cost multiply-adds per token (embedding tables are lookups)."""
    return sum(p.numel() for n, p in model.named_parameters() if ".embeddings." not in f".{n}")


@dataclass
class FitResult:
    steps: int
    examples_seen: int
    train_flops: float
    eval_flops: float
    train_time_s: float
    history: list[dict[str, Any]]  # one entry per epoch: {"epoch", "train_loss", **eval metrics}


def move(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def fit(
    model: torch.nn.Module,
    batches: Callable[[int], Iterable[dict[str, torch.Tensor]]],
    steps_per_epoch: int,
    loss_fn: Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor],
    hp: FinetuneHParams,
    device: torch.device,
    evaluate: Callable[[int], dict[str, float]] | None = None,
    tracker: Tracker | None = None,
    log_every: int = 50,
) -> FitResult:
    """Train `model` for hp.epochs epochs. batches(epoch) yields dicts of tensors (on CPU; moved here)
    with "input_ids" [B, T]; loss_fn(model, batch) -> scalar loss. evaluate(epoch) runs after every
    epoch and returns metrics (logged as eval/<name>). The model ends in eval mode."""
    total_steps = hp.epochs * steps_per_epoch
    if hp.max_steps is not None:
        total_steps = min(total_steps, hp.max_steps)
    if total_steps < 1:
        raise ValueError("no training steps: the training set is empty")
    model.to(device)
    optimizer = build_optimizer(model, hp.lr, hp.weight_decay, hp.adam_betas, hp.adam_eps,
                                layer_decay=hp.layer_decay, layer_decay_variant=hp.layer_decay_variant,
                                bias_correction=hp.adam_bias_correction)
    scheduler = linear_schedule(optimizer, math.ceil(hp.warmup_fraction * total_steps), total_steps)
    precision = Precision(resolve_precision(hp.precision, device), device)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    n_flop_params = count_flop_params(model)
    config = getattr(model, "config", None)
    step = examples = 0
    train_flops = eval_flops = train_time = 0.0
    history: list[dict[str, Any]] = []
    for epoch in range(hp.epochs):
        model.train()
        t0 = time.perf_counter()
        loss_sum, loss_n = torch.zeros((), device=device), 0
        for batch in batches(epoch):
            if step >= total_steps:
                break
            batch = move(batch, device)
            with precision.autocast():
                loss = loss_fn(model, batch)
            precision.backward(loss)
            precision.step(optimizer, params, hp.max_grad_norm)
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            b, t = batch["input_ids"].shape
            examples += b
            if config is not None:
                train_flops += 3 * forward_flops(config, n_flop_params, b, t)
            loss_sum += loss.detach().float()
            loss_n += 1
            if tracker is not None and step % log_every == 0:
                tracker.log({"train/loss": loss.item(), "train/lr": scheduler.get_last_lr()[0],
                             "train/examples": examples}, step)
        train_time += time.perf_counter() - t0
        row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": (loss_sum / max(loss_n, 1)).item()}
        if evaluate is not None:
            model.eval()
            with torch.no_grad(), precision.autocast():
                metrics = evaluate(epoch)
            eval_flops += float(metrics.pop("_flops", 0.0))
            row.update(metrics)
        history.append(row)
        log.info("epoch %d: %s", epoch + 1, row)
        if tracker is not None:
            tracker.log({k if k in ("epoch", "train_loss") else f"eval/{k}": v for k, v in row.items()}, step)
        if step >= total_steps:
            break
    model.eval()
    return FitResult(step, examples, train_flops, eval_flops, train_time, history)
