"""Read/write transformers-format directories (config.json + model.safetensors) in two formats:
ConvBERT (model_type convbert, our attention='mixed') and ELECTRA (model_type electra, our attention='self',
the same-size baseline). transformers' ConvBertModel / ElectraModel state-dict key names and shapes are the
interchange format.

This module never imports transformers, nor the model class (convbert/model.py calls in here); pickled
checkpoints (pytorch_model.bin) are read with torch.load(weights_only=True).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .config import ConvBertConfig
from .io import atomic_path, read_json, write_text_atomic

# config.json keys shared 1:1 with ConvBertConfig by both formats, with transformers' defaults for keys a
# file may omit
_HF_DEFAULTS: dict[str, Any] = dict(
    vocab_size=30522, hidden_size=768, embedding_size=768, num_hidden_layers=12, num_attention_heads=12,
    intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2, hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1, layer_norm_eps=1e-12, initializer_range=0.02,
)
_CONVBERT_DEFAULTS: dict[str, Any] = dict(head_ratio=2, conv_kernel_size=9, num_groups=1)  # convbert only
# transformers' ElectraConfig has small-model defaults where ConvBertConfig has base-size ones
_ELECTRA_SIZES: dict[str, Any] = dict(hidden_size=256, embedding_size=128, num_attention_heads=4,
                                      intermediate_size=1024)
# our own option, stored in config.json so that our exports round-trip (transformers ignores it)
_MASK_KEY = "convbert_mask_conv_padding"
# non-persistent buffers that older transformers versions saved; carry no weights
_IGNORED_KEYS = {"embeddings.position_ids", "embeddings.token_type_ids"}
# the backbone's prefix in task / pretraining checkpoints (ConvBertForSequenceClassification,
# ElectraForPreTraining, ...): their heads are ignored
_BACKBONE_PREFIX = {"convbert": "convbert.", "electra": "electra."}
MODEL_TYPES = {"mixed": "convbert", "self": "electra"}

_ATTN = "attention.self."


def check_exportable(config: ConvBertConfig) -> None:
    """Raise ValueError naming the setting that neither transformers format can express (ConvBERT for
    attention='mixed', ELECTRA for attention='self'); pretraining calls it before it starts."""
    if config.attention == "mixed" and int(config.head_ratio) != config.head_ratio:
        raise ValueError(f"model.head_ratio={config.head_ratio}: transformers' ConvBERT format needs an integer "
                         "head_ratio")
    if config.attention == "self" and config.num_groups != 1:
        raise ValueError(f"model.num_groups={config.num_groups}: transformers' ELECTRA format has no grouped "
                         "FFN; use num_groups=1 for an attention=self model")


def config_from_hf(hf: dict[str, Any], source: str = "config.json") -> ConvBertConfig:
    model_type = hf.get("model_type", "convbert")
    if model_type not in MODEL_TYPES.values():
        raise ValueError(f"{source}: model_type is {model_type!r}, expected one of {sorted(MODEL_TYPES.values())}")
    act = hf.get("hidden_act", "gelu")
    if act != "gelu":
        raise ValueError(f"{source}: hidden_act={act!r} is not supported (only 'gelu')")
    position = hf.get("position_embedding_type", "absolute")
    if position != "absolute":
        raise ValueError(f"{source}: position_embedding_type={position!r} is not supported (only 'absolute')")
    defaults = _HF_DEFAULTS | (_ELECTRA_SIZES if model_type == "electra" else {})
    kw = {k: hf.get(k, v) for k, v in defaults.items()}
    if kw["embedding_size"] is None:  # transformers' ElectraConfig may leave it unset: = hidden_size
        kw["embedding_size"] = kw["hidden_size"]
    pad = hf.get("pad_token_id")
    kw["pad_token_id"] = 0 if pad is None else pad
    if model_type == "convbert":
        kw.update({k: hf.get(k, v) for k, v in _CONVBERT_DEFAULTS.items()})
        kw["mask_conv_padding"] = bool(hf.get(_MASK_KEY, False))  # transformers/official: conv sees padding
    try:
        return ConvBertConfig(attention="mixed" if model_type == "convbert" else "self", **kw)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from e


def config_to_hf(config: ConvBertConfig) -> dict[str, Any]:
    """config.json for transformers: ConvBertConfig for mixed attention, ElectraConfig for self-attention."""
    check_exportable(config)
    d = {k: getattr(config, k) for k in _HF_DEFAULTS}
    common = dict(model_type=MODEL_TYPES[config.attention], hidden_act="gelu", pad_token_id=config.pad_token_id,
                  **d)
    if config.attention == "self":
        return dict(architectures=["ElectraModel"], position_embedding_type="absolute", **common)
    return dict(architectures=["ConvBertModel"], tie_word_embeddings=True, **common,
                head_ratio=int(config.head_ratio), conv_kernel_size=config.conv_kernel_size,
                num_groups=config.num_groups, **{_MASK_KEY: config.mask_conv_padding})


# ---- state-dict mapping ------------------------------------------------------------------------

def state_dict_to_hf(sd: dict[str, torch.Tensor], config: ConvBertConfig) -> dict[str, torch.Tensor]:
    """Our ConvBertModel state dict -> transformers ConvBertModel / ElectraModel keys and shapes (the two
    formats name the embeddings, self-attention and FFN alike; ELECTRA has no conv weights)."""
    A = config.num_sa_heads * config.attention_head_size
    out: dict[str, torch.Tensor] = {}
    for key, t in sd.items():
        if not key.startswith("layers."):
            out[key] = t
            continue
        _, i, rest = key.split(".", 2)
        p = f"encoder.layer.{i}."
        if rest.startswith("attention.qkv."):
            kind = rest.rsplit(".", 1)[1]  # weight | bias
            names = ("query", "key", "value", "conv_out_layer")[:t.shape[0] // A]  # no V' without conv heads
            for name, part in zip(names, t.split(A, dim=0), strict=True):
                out[f"{p}{_ATTN}{name}.{kind}"] = part
        elif rest == "attention.key_conv_depthwise":  # [k, d] -> [d, 1, k]
            out[f"{p}{_ATTN}key_conv_attn_layer.depthwise.weight"] = t.t().unsqueeze(1)
        elif rest == "attention.key_conv_pointwise.weight":  # [A, d] -> [A, d, 1]
            out[f"{p}{_ATTN}key_conv_attn_layer.pointwise.weight"] = t.unsqueeze(-1)
        elif rest == "attention.key_conv_pointwise.bias":  # [A] -> [A, 1]
            out[f"{p}{_ATTN}key_conv_attn_layer.bias"] = t.unsqueeze(-1)
        elif rest.startswith("attention.conv_kernel."):
            out[f"{p}{_ATTN}conv_kernel_layer.{rest.rsplit('.', 1)[1]}"] = t
        elif rest.startswith(("attention.dense.", "attention.LayerNorm.")):
            out[f"{p}attention.output.{rest[len('attention.'):]}"] = t
        elif rest.startswith(("intermediate.", "output.")):
            block, kind = rest.split(".")
            out[f"{p}{block}.dense.{kind}"] = t
        elif rest.startswith("LayerNorm."):
            out[f"{p}output.{rest}"] = t
        else:
            raise KeyError(f"no HF name for parameter {key!r}")
    return {k: v.contiguous() for k, v in out.items()}


def state_dict_from_hf(hf: dict[str, torch.Tensor], config: ConvBertConfig) -> dict[str, torch.Tensor]:
    """transformers keys -> our state dict (inverse of state_dict_to_hf; keys already validated)."""
    mixed = config.attention == "mixed"
    qkv = ("query", "key", "value", "conv_out_layer") if mixed else ("query", "key", "value")
    out: dict[str, torch.Tensor] = {}
    for i in range(config.num_hidden_layers):
        p, q = f"encoder.layer.{i}.", f"layers.{i}."
        for kind in ("weight", "bias"):
            out[f"{q}attention.qkv.{kind}"] = torch.cat([hf[f"{p}{_ATTN}{n}.{kind}"] for n in qkv], dim=0)
            out[f"{q}attention.dense.{kind}"] = hf[f"{p}attention.output.dense.{kind}"]
            out[f"{q}attention.LayerNorm.{kind}"] = hf[f"{p}attention.output.LayerNorm.{kind}"]
            out[f"{q}intermediate.{kind}"] = hf[f"{p}intermediate.dense.{kind}"]
            out[f"{q}output.{kind}"] = hf[f"{p}output.dense.{kind}"]
            out[f"{q}LayerNorm.{kind}"] = hf[f"{p}output.LayerNorm.{kind}"]
            if mixed:
                out[f"{q}attention.conv_kernel.{kind}"] = hf[f"{p}{_ATTN}conv_kernel_layer.{kind}"]
        if mixed:
            sep = f"{p}{_ATTN}key_conv_attn_layer."
            out[f"{q}attention.key_conv_depthwise"] = hf[f"{sep}depthwise.weight"][:, 0, :].t().contiguous()
            out[f"{q}attention.key_conv_pointwise.weight"] = hf[f"{sep}pointwise.weight"][..., 0]
            out[f"{q}attention.key_conv_pointwise.bias"] = hf[f"{sep}bias"][:, 0]
    for key, t in hf.items():
        if not key.startswith("encoder."):
            out[key] = t
    return out


def check_hf_state_dict(sd: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], source: str) -> None:
    """Raise one ValueError naming every missing, unexpected and mis-shaped key."""
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    shapes = sorted(f"{k}: checkpoint {tuple(sd[k].shape)} vs expected {tuple(expected[k].shape)}"
                    for k in set(sd) & set(expected) if sd[k].shape != expected[k].shape)
    problems = []
    if missing:
        problems.append(f"missing keys: {missing}")
    if unexpected:
        problems.append(f"unexpected keys: {unexpected}")
    if shapes:
        problems.append(f"mis-shaped keys: {shapes}")
    if problems:
        raise ValueError(f"{source} does not match its config.json: " + "; ".join(problems))


# ---- files -------------------------------------------------------------------------------------

def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """safetensors' load_file, with an error that names the file (a cut-short copy says only 'incomplete
    metadata')."""
    try:
        return load_file(str(path))
    except Exception as e:
        raise ValueError(f"{path}: cannot read it as safetensors ({e}); the file is damaged or incomplete") from e


def read_hf_weights(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    st, index = path / "model.safetensors", path / "model.safetensors.index.json"
    pt = path / "pytorch_model.bin"
    if st.is_file():
        return _load_safetensors(st), str(st)
    if index.is_file():  # sharded safetensors
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        sd: dict[str, torch.Tensor] = {}
        for shard in shards:
            sd.update(_load_safetensors(path / shard))
        return sd, str(index)
    if pt.is_file():
        sd = torch.load(pt, map_location="cpu", weights_only=True)  # refuses to run arbitrary pickles
        if not isinstance(sd, dict):
            raise ValueError(f"{pt}: expected a state dict, got {type(sd).__name__}")
        return sd, str(pt)
    raise FileNotFoundError(
        f"{path}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def read_hf(path: str | Path, **config_overrides: Any) -> tuple[ConvBertConfig, dict[str, torch.Tensor], str]:
    """A transformers-format directory's config and backbone weights (still in transformers' key names) and
    the weights file's name, for messages. Checkpoints of task or pretraining models (keys prefixed
    'convbert.' or 'electra.', e.g. google/electra-small-discriminator) give their backbone; heads are
    ignored. Use ConvBertModel.from_hf to get a model."""
    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{cfg_file} not found")
    hf_cfg = read_json(cfg_file)
    if not isinstance(hf_cfg, dict):
        raise ValueError(f"{cfg_file}: expected a JSON object, got {type(hf_cfg).__name__}")
    config = config_from_hf(hf_cfg, str(cfg_file))
    if config_overrides:
        config = ConvBertConfig.from_dict({**config.to_dict(), **config_overrides})
    try:
        sd, source = read_hf_weights(path)
    except FileNotFoundError:
        raise
    except Exception as e:  # a truncated or foreign file: name it
        raise ValueError(f"{path}: cannot read the weights ({type(e).__name__}: {e})") from e
    prefix = _BACKBONE_PREFIX[MODEL_TYPES[config.attention]]
    if any(k.startswith(prefix) for k in sd) and not any(k.startswith(("embeddings.", "encoder.")) for k in sd):
        sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return config, {k: v for k, v in sd.items() if k not in _IGNORED_KEYS}, source


def convert_from_hf(sd: dict[str, torch.Tensor], config: ConvBertConfig, expected: dict[str, torch.Tensor],
                    source: str) -> dict[str, torch.Tensor]:
    """Check transformers-named weights against our model's state dict `expected`, then rename them."""
    check_hf_state_dict(sd, state_dict_to_hf(expected, config), source)
    return state_dict_from_hf(sd, config)


def write_hf(config: ConvBertConfig, state_dict: dict[str, torch.Tensor], path: str | Path) -> None:
    """Write config.json + model.safetensors in the format of config.attention (ConvBERT or ELECTRA); each file
    lands atomically (tmp file, then os.replace)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    hf_cfg = config_to_hf(config)
    tensors = state_dict_to_hf({k: v.detach().cpu() for k, v in state_dict.items()}, config)
    with atomic_path(path / "model.safetensors") as tmp:
        save_file(tensors, tmp, metadata={"format": "pt"})
    write_text_atomic(path / "config.json", json.dumps(hf_cfg, indent=2) + "\n")
