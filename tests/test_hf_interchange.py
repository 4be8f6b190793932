"""HF transformers-format checkpoints: import, export, round trip and error reporting."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from convbert.config import ConvBertConfig
from convbert.model import ConvBertModel

transformers = pytest.importorskip("transformers")

V = 1000
# released widths/heads/groups with 2 layers (test speed), plus a head_ratio != 2 variant
HF_CONFIGS = {
    "small": dict(hidden_size=256, embedding_size=128, num_attention_heads=4, intermediate_size=1024),
    "medium-small": dict(hidden_size=384, embedding_size=128, num_attention_heads=8, intermediate_size=1536,
                         num_groups=2),
    "small-gamma3": dict(hidden_size=256, embedding_size=128, num_attention_heads=4, intermediate_size=1024,
                         head_ratio=3),
}


def hf_model(name: str, cls=None):
    torch.manual_seed(0)
    config = transformers.ConvBertConfig(vocab_size=V, num_hidden_layers=2, pad_token_id=0, **HF_CONFIGS[name])
    return (cls or transformers.ConvBertModel)(config).eval()


def padded_batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, V, (3, 40), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 31:] = 0
    mask[2, 12:] = 0
    ids[mask == 0] = 0
    types = torch.zeros_like(ids)
    types[:, 20:] = 1
    return ids, mask, types


def hf_hidden(model, ids, mask, types):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state


@pytest.mark.parametrize("name", list(HF_CONFIGS))
def test_import_matches_transformers(tmp_path, name):
    ref = hf_model(name)
    ref.save_pretrained(tmp_path)
    ours = ConvBertModel.from_hf(tmp_path).eval()
    assert not ours.config.mask_conv_padding  # imported checkpoints keep HF's (unmasked) conv behaviour
    ids, mask, types = padded_batch()
    with torch.no_grad():
        out = ours(ids, mask, types)
    assert (out - hf_hidden(ref, ids, mask, types)).abs().max().item() <= 1e-5


def test_round_trip_ours_to_transformers_to_ours(tmp_path):
    torch.manual_seed(0)
    config = ConvBertConfig.from_preset("medium-small", vocab_size=V, num_hidden_layers=2,
                                        mask_conv_padding=False)
    ours = ConvBertModel(config).eval()
    ours.to_hf(tmp_path / "a")
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    assert cfg["model_type"] == "convbert" and cfg["pad_token_id"] == 0
    ref, info = transformers.ConvBertModel.from_pretrained(tmp_path / "a", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    ids, mask, types = padded_batch()
    with torch.no_grad():
        assert (ours(ids, mask, types) - hf_hidden(ref.eval(), ids, mask, types)).abs().max().item() <= 1e-5
    ref.save_pretrained(tmp_path / "b")
    back = ConvBertModel.from_hf(tmp_path / "b")
    assert back.config == config
    theirs, mine = back.state_dict(), ours.state_dict()
    assert theirs.keys() == mine.keys()
    assert all(torch.equal(theirs[k], mine[k]) for k in mine)


def test_mask_conv_padding_survives_our_own_round_trip(tmp_path):
    ours = ConvBertModel(ConvBertConfig.from_preset("tiny", vocab_size=V, num_hidden_layers=1))
    assert ours.config.mask_conv_padding
    ours.to_hf(tmp_path)
    assert ConvBertModel.from_hf(tmp_path).config == ours.config


def test_pytorch_model_bin_and_prefixed_task_checkpoints(tmp_path):
    ref = hf_model("small", transformers.ConvBertForMaskedLM)  # keys are prefixed with "convbert."
    ref.config.to_json_file(str(tmp_path / "config.json"))
    torch.save(ref.state_dict(), tmp_path / "pytorch_model.bin")
    ours = ConvBertModel.from_hf(tmp_path).eval()
    ids, mask, types = padded_batch()
    with torch.no_grad():
        diff = ours(ids, mask, types) - hf_hidden(ref.convbert, ids, mask, types)
    assert diff.abs().max().item() <= 1e-5


def corrupt(tmp_path, edit):
    hf_model("small").save_pretrained(tmp_path)
    sd = load_file(str(tmp_path / "model.safetensors"))
    edit(sd)
    save_file(sd, str(tmp_path / "model.safetensors"))


def test_missing_key_is_named(tmp_path):
    key = "encoder.layer.1.attention.self.conv_kernel_layer.bias"
    corrupt(tmp_path, lambda sd: sd.pop(key))
    with pytest.raises(ValueError, match=rf"missing keys: \['{key}'\]"):
        ConvBertModel.from_hf(tmp_path)


def test_unexpected_key_is_named(tmp_path):
    corrupt(tmp_path, lambda sd: sd.__setitem__("encoder.layer.9.extra.weight", torch.zeros(3)))
    with pytest.raises(ValueError, match=r"unexpected keys: \['encoder.layer.9.extra.weight'\]"):
        ConvBertModel.from_hf(tmp_path)


def test_misshaped_key_is_named(tmp_path):
    key = "encoder.layer.0.intermediate.dense.weight"
    corrupt(tmp_path, lambda sd: sd.__setitem__(key, torch.zeros(1000, 256)))
    with pytest.raises(ValueError, match=rf"mis-shaped keys: \['{key}: checkpoint \(1000, 256\) vs expected "
                                         r"\(1024, 256\)'\]"):
        ConvBertModel.from_hf(tmp_path)


def test_bad_config_and_missing_weights_are_reported(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type"):
        ConvBertModel.from_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "convbert", "hidden_size": 256,
                                                      "num_attention_heads": 4, "embedding_size": 128}))
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        ConvBertModel.from_hf(tmp_path)
    with pytest.raises(ValueError, match="num_groups=2.*ELECTRA"):
        ConvBertModel(ConvBertConfig.from_preset("medium-small", vocab_size=V, num_hidden_layers=1,
                                                 attention="self")).to_hf(tmp_path / "x")
    assert not (tmp_path / "x" / "model.safetensors").exists()
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="config.json: expected a JSON object"):
        ConvBertModel.from_hf(tmp_path)


def test_truncated_weights_name_the_file(tmp_path):
    hf_model("small").save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(ValueError, match="cannot read the weights"):
        ConvBertModel.from_hf(tmp_path)


# ---- ELECTRA format: our attention='self' baseline ------------------------------------------------

ELECTRA_SIZES = {  # tiny preset, and ELECTRA-small's widths (google/electra-small-discriminator) with 2 layers
    "tiny": dict(preset="tiny"),
    "small": dict(preset="small", num_hidden_layers=2),
}


def electra_ours(name: str) -> ConvBertModel:
    torch.manual_seed(0)
    kw = dict(ELECTRA_SIZES[name])
    config = ConvBertConfig.from_preset(kw.pop("preset"), vocab_size=V, attention="self", **kw)
    return ConvBertModel(config).eval()


@pytest.mark.parametrize("name", list(ELECTRA_SIZES))
def test_electra_export_loads_in_transformers_with_equal_outputs(tmp_path, name):
    ours = electra_ours(name)
    ours.to_hf(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "electra"
    ref, info = transformers.ElectraModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert hasattr(ref, "embeddings_project") == (ours.config.embedding_size != ours.config.hidden_size)
    ids, mask, types = padded_batch()
    with torch.no_grad():
        assert (ours(ids, mask, types) - hf_hidden(ref.eval(), ids, mask, types)).abs().max().item() <= 1e-5


def test_electra_round_trip_is_bit_exact(tmp_path):
    ours = electra_ours("small")
    ours.to_hf(tmp_path / "a")
    transformers.ElectraModel.from_pretrained(tmp_path / "a").save_pretrained(tmp_path / "b")
    for d in ("a", "b"):
        back = ConvBertModel.from_hf(tmp_path / d)
        assert back.config == ours.config
        theirs, mine = back.state_dict(), ours.state_dict()
        assert theirs.keys() == mine.keys() and all(torch.equal(theirs[k], mine[k]) for k in mine)


@pytest.mark.parametrize("cls", ["ElectraForSequenceClassification", "ElectraForPreTraining"])
def test_electra_task_and_discriminator_checkpoints_load_their_backbone(tmp_path, cls):
    torch.manual_seed(0)
    # ELECTRA-small's config.json as released (google/electra-small-discriminator), 2 layers
    config = transformers.ElectraConfig(vocab_size=V, embedding_size=128, hidden_size=256, num_hidden_layers=2,
                                        num_attention_heads=4, intermediate_size=1024, pad_token_id=0)
    ref = getattr(transformers, cls)(config).eval()  # keys prefixed "electra.", plus a head
    ref.save_pretrained(tmp_path)
    ours = ConvBertModel.from_hf(tmp_path).eval()
    small = ConvBertConfig.from_preset("small", vocab_size=V, num_hidden_layers=2, attention="self")
    assert ours.config == small
    ids, mask, types = padded_batch()
    with torch.no_grad():
        assert (ours(ids, mask, types) - hf_hidden(ref.electra, ids, mask, types)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("model_type, hf_config", [("convbert", "ConvBertConfig"), ("electra", "ElectraConfig")])
def test_a_config_json_that_omits_sizes_gets_transformers_defaults_for_its_type(model_type, hf_config):
    from convbert.hf import config_from_hf

    ours = config_from_hf({"model_type": model_type})  # sizes left to the format's defaults
    theirs = getattr(transformers, hf_config)()
    for key in ("vocab_size", "hidden_size", "embedding_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size", "max_position_embeddings", "type_vocab_size", "layer_norm_eps"):
        assert getattr(ours, key) == getattr(theirs, key), key
