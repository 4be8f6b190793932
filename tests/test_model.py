"""ConvBertConfig and ConvBertModel: sizes, validation, masking semantics, heads, conv kernels."""

import functools

import pytest
import torch
import torch.nn.functional as F

from benchmarks.bench_common import OpCounter
from convbert.config import PRESETS, ConvBertConfig
from convbert.model import (
    ConvBertForQuestionAnswering,
    ConvBertForSequenceClassification,
    ConvBertModel,
    DiscriminatorHead,
    GeneratorHead,
    GroupedLinear,
)
from convbert.ops import (
    _keep_mask,
    depthwise_conv_same,
    dropout,
    feed_forward,
    lightweight_conv,
    self_attention,
    tied_lm_cross_entropy,
)

V = 1000  # small vocab keeps tests fast


def tiny(**kw) -> ConvBertConfig:
    return ConvBertConfig.from_preset("tiny", vocab_size=V, num_hidden_layers=2, **kw)


def batch(B: int = 3, T: int = 24, pad_from: tuple[int, ...] = (24, 17, 9), seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (B, T), generator=g)
    mask = torch.zeros(B, T, dtype=torch.long)
    for b, n in enumerate(pad_from):
        mask[b, :n] = 1
    ids[mask == 0] = 0
    types = torch.zeros_like(ids)
    types[:, T // 2:] = 1
    return ids, mask, types


# ---- config ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,expected", [("small", 13.1e6), ("medium-small", 17.5e6), ("base", 105.7e6)])
def test_preset_backbone_parameter_counts_match_spec(name, expected):
    with torch.device("meta"):  # sizes only, no allocation
        model = ConvBertModel(ConvBertConfig.from_preset(name))
    assert abs(model.num_parameters() - expected) / expected < 0.01


@pytest.mark.parametrize("name,d,heads", [("small", 64, 1), ("medium-small", 96, 2), ("base", 256, 4)])
def test_generator_config_follows_spec_table(name, d, heads):
    disc = ConvBertConfig.from_preset(name)
    gen = disc.generator_config()
    assert (gen.hidden_size, gen.num_attention_heads, gen.intermediate_size) == (d, heads, 4 * d)
    assert gen.num_hidden_layers == disc.num_hidden_layers
    assert gen.embedding_size == disc.embedding_size
    assert gen.attention == "mixed"
    assert disc.generator_config(0.5).hidden_size == disc.hidden_size // 2


def test_tiny_preset_and_overrides():
    c = ConvBertConfig.from_preset("tiny", vocab_size=500)
    assert (c.num_hidden_layers, c.hidden_size, c.embedding_size, c.num_attention_heads, c.intermediate_size) == (
        4, 128, 128, 4, 512)
    assert c.vocab_size == 500 and c.num_sa_heads == 2 and c.attention_head_size == 32
    assert ConvBertConfig.from_dict(c.to_dict()) == c


def test_unknown_preset_lists_presets():
    with pytest.raises(ValueError, match="unknown ConvBERT preset 'huge'") as e:
        ConvBertConfig.from_preset("huge")
    for name in PRESETS:
        assert name in str(e.value)


@pytest.mark.parametrize("overrides,field", [
    (dict(hidden_size=130), "hidden_size"),  # 130 % 4 heads
    (dict(num_groups=3), "num_groups"),
    (dict(intermediate_size=510, num_groups=4), "intermediate_size"),
    (dict(attention="conv"), "attention"),
    (dict(conv_kernel_size=8), "conv_kernel_size"),
    (dict(head_ratio=0), "head_ratio"),
    (dict(hidden_dropout_prob=1.0), "hidden_dropout_prob"),
    (dict(num_hidden_layers=0), "num_hidden_layers"),
])
def test_invalid_config_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        ConvBertConfig.from_preset("tiny", **overrides)


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match="hidden_sise"):
        ConvBertConfig.from_dict({"hidden_sise": 128})


# ---- model -------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides", [
    {}, dict(attention="self"), dict(head_ratio=3), dict(head_ratio=1), dict(head_ratio=8),
    dict(conv_kernel_size=5), dict(num_groups=2), dict(embedding_size=64),
])
def test_forward_backward_shapes(overrides):
    torch.manual_seed(0)
    config = tiny(**overrides)
    model = ConvBertModel(config)
    ids, mask, types = batch()
    out = model(ids, mask, types)
    assert out.shape == (3, 24, config.hidden_size)
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert (model.embeddings_project is None) == (config.embedding_size == config.hidden_size)


def test_head_sizing_matches_hf_rule():
    # N = max(1, heads // gamma) self-attention heads (+ N conv heads), head size d // (2N)
    for heads, ratio, n, size in [(4, 2, 2, 32), (4, 3, 1, 64), (4, 8, 1, 64), (4, 1, 4, 16), (8, 2, 4, 16)]:
        c = tiny(num_attention_heads=heads, head_ratio=ratio)
        assert (c.num_sa_heads, c.attention_head_size) == (n, size)
    assert tiny(attention="self").attention_head_size == 32


def test_sequence_longer_than_position_table_raises():
    model = ConvBertModel(tiny(max_position_embeddings=16))
    with pytest.raises(ValueError, match="max_position_embeddings=16"):
        model(torch.ones(1, 17, dtype=torch.long))


def test_padding_does_not_leak_into_real_tokens_when_masked():
    torch.manual_seed(0)
    ids, mask, types = batch()
    other = ids.clone()
    other[mask == 0] = torch.randint(5, V, (int((mask == 0).sum()),))  # change padding contents only
    real = mask.bool()
    masked = ConvBertModel(tiny(mask_conv_padding=True)).eval()
    with torch.no_grad():
        a, b = masked(ids, mask, types), masked(other, mask, types)
    assert torch.allclose(a[real], b[real], atol=1e-5)
    # HF/official behaviour (option off): the conv branch reads padding, so real tokens change
    unmasked = ConvBertModel(tiny(mask_conv_padding=False)).eval()
    unmasked.load_state_dict(masked.state_dict())
    with torch.no_grad():
        c, d = unmasked(ids, mask, types), unmasked(other, mask, types)
    assert (c[real] - d[real]).abs().max() > 1e-3
    assert torch.allclose(c[0], a[0], atol=1e-5)  # unpadded row: both settings agree


def test_no_mask_equals_all_ones_mask():
    model = ConvBertModel(tiny()).eval()
    ids, _, types = batch(pad_from=(24, 24, 24))
    with torch.no_grad():
        assert torch.allclose(model(ids, None, types), model(ids, torch.ones_like(ids), types), atol=1e-5)


def test_mask_without_padding_is_dropped_and_padding_masks_stay_finite_in_fp16():
    model = ConvBertModel(tiny()).eval()
    ids, _, types = batch(pad_from=(24, 24, 24))
    with torch.no_grad(), OpCounter() as seen:
        model(ids, torch.ones_like(ids), types)
    assert "aten.masked_fill" not in seen.ops  # no bias built: SDPA may take its mask-free kernels
    # the bias is the compute dtype's finfo.min (-1e9 would be -inf in fp16): padded rows stay finite
    ids, mask, types = batch()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        out = model(ids, mask, types)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    ref = model(ids, mask, types)
    assert torch.allclose(out[mask.bool()], ref[mask.bool()], atol=0.1)


def test_shared_embeddings_are_not_reinitialised():
    disc_cfg = tiny()
    disc = ConvBertModel(disc_cfg)
    before = disc.embeddings.word_embeddings.weight.detach().clone()
    gen = ConvBertModel(disc_cfg.generator_config(), embeddings=disc.embeddings)
    assert gen.embeddings is disc.embeddings
    assert torch.equal(disc.embeddings.word_embeddings.weight, before)
    assert gen.config.hidden_size == 32 and gen.embeddings_project is not None
    assert abs(gen.embeddings_project.weight.std().item() - 0.02) < 0.003  # own modules still initialised


def test_init_follows_official_scheme():
    config = tiny()
    model = ConvBertModel(config)
    att = model.layers[0].attention
    assert abs(att.qkv.weight.std().item() - 0.02) < 0.002
    assert abs(att.key_conv_depthwise.std().item() - 1 / config.conv_kernel_size) < 0.02
    assert torch.all(att.qkv.bias == 0) and torch.all(att.LayerNorm.weight == 1)


def test_bf16_autocast_forward_backward():
    model = ConvBertModel(tiny())
    ids, mask, types = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, mask, types)
    out.float().square().mean().backward()
    assert torch.isfinite(out.float()).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_dropout_train_vs_eval():
    torch.manual_seed(0)
    model = ConvBertModel(tiny())
    ids, mask, types = batch()
    model.train()
    assert not torch.allclose(model(ids, mask, types), model(ids, mask, types))
    model.eval()
    assert torch.equal(model(ids, mask, types), model(ids, mask, types))


def test_dropout_function_statistics_and_gradient():
    torch.manual_seed(0)
    x = torch.ones(200_000, requires_grad=True)
    y = dropout(x, 0.1, True)
    kept = y != 0
    assert abs(1 - kept.float().mean().item() - 0.1) < 0.005  # P(drop) = 6554 / 65536
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.9))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())
    assert dropout(x, 0.1, False) is x


# ---- conv kernels ------------------------------------------------------------------------------

def test_depthwise_conv_matches_conv1d_and_gradcheck():
    x = torch.randn(2, 11, 6, dtype=torch.double, requires_grad=True)
    w = torch.randn(5, 6, dtype=torch.double, requires_grad=True)
    ref = F.conv1d(x.transpose(1, 2), w.t().unsqueeze(1), padding=2, groups=6).transpose(1, 2)
    assert torch.allclose(depthwise_conv_same(x, w), ref)
    assert torch.autograd.gradcheck(depthwise_conv_same, (x, w))


def test_depthwise_conv_padding_rows_read_as_zero():
    x = torch.randn(2, 9, 4, dtype=torch.double, requires_grad=True)
    w = torch.randn(3, 4, dtype=torch.double, requires_grad=True)
    pad = torch.zeros(2, 9, 1, dtype=torch.bool)
    pad[1, 6:] = True
    ref = depthwise_conv_same(x.masked_fill(pad, 0.0), w)
    assert torch.allclose(depthwise_conv_same(x, w, pad), ref)
    assert torch.autograd.gradcheck(lambda x, w: depthwise_conv_same(x, w, pad), (x, w))


def test_depthwise_conv_of_bf16_input_accumulates_in_fp32():
    x = torch.randn(2, 16, 8).bfloat16().requires_grad_()
    w = torch.randn(9, 8, requires_grad=True)
    out = depthwise_conv_same(x, w)
    assert out.dtype == torch.float32 and torch.allclose(out, depthwise_conv_same(x.detach().float(), w), atol=1e-5)
    out.sum().backward()
    assert x.grad.dtype == torch.bfloat16 and w.grad.dtype == torch.float32


def test_lightweight_conv_matches_definition_and_gradcheck():
    B, T, N, D, k = 2, 7, 2, 3, 5  # T short enough that taps fall off both ends
    v = torch.randn(B, T, N, D, dtype=torch.double, requires_grad=True)
    a = torch.randn(B, T, N, k, dtype=torch.double).softmax(-1).requires_grad_()
    ref = torch.zeros(B, T, N, D, dtype=torch.double)
    for t in range(T):
        for j in range(k):
            s = t + j - k // 2
            if 0 <= s < T:
                ref[:, t] += a[:, t, :, j, None] * v[:, s]
    assert torch.allclose(lightweight_conv(v, a), ref)
    assert torch.autograd.gradcheck(lightweight_conv, (v, a))


# ---- heads -------------------------------------------------------------------------------------

def test_generator_head_on_selected_positions_equals_full_projection():
    torch.manual_seed(0)
    config = tiny()
    gen_cfg = config.generator_config()
    disc = ConvBertModel(config)
    gen = ConvBertModel(gen_cfg, embeddings=disc.embeddings).eval()
    head = GeneratorHead(gen_cfg, disc.embeddings.word_embeddings)
    assert head.word_embeddings.weight is disc.embeddings.word_embeddings.weight  # tied
    ids, mask, types = batch()
    hidden = gen(ids, mask, types)
    positions = torch.tensor([[0, 3], [1, 5], [2, 8]])  # (row, position) pairs
    selected = head(hidden[positions[:, 0], positions[:, 1]])  # [M, V]
    full = head(hidden)[positions[:, 0], positions[:, 1]]
    assert selected.shape == (3, V)
    assert torch.allclose(selected, full, atol=1e-5)


def test_tied_lm_cross_entropy_matches_cross_entropy_and_gradcheck():
    torch.manual_seed(0)
    h = torch.randn(7, 5, dtype=torch.double, requires_grad=True)
    w = torch.randn(11, 5, dtype=torch.double, requires_grad=True)
    b = torch.randn(11, dtype=torch.double, requires_grad=True)
    targets = torch.randint(0, 11, (7,))
    row_weights = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0], dtype=torch.double)
    loss, probs = tied_lm_cross_entropy(h, w, b, targets)
    ref_logits = F.linear(h, w, b)
    assert torch.allclose(probs, ref_logits.softmax(-1)) and not probs.requires_grad
    assert torch.allclose(loss, F.cross_entropy(ref_logits, targets, reduction="sum"))
    weighted, _ = tied_lm_cross_entropy(h, w, b, targets, row_weights)
    ref = (F.cross_entropy(ref_logits, targets, reduction="none") * row_weights).sum()
    assert torch.allclose(weighted, ref)
    for rw in (None, row_weights):
        loss_of = functools.partial(lambda h, w, b, rw: tied_lm_cross_entropy(h, w, b, targets, rw)[0], rw=rw)
        assert torch.autograd.gradcheck(loss_of, (h, w, b))


def test_generator_head_loss_under_bf16_autocast_matches_autocast_reference():
    torch.manual_seed(0)
    config = tiny()
    emb = torch.nn.Embedding(V, config.embedding_size)
    head = GeneratorHead(config.generator_config(), emb)
    hidden = torch.randn(20, head.dense.in_features)
    targets = torch.randint(0, V, (20,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, probs = head.loss(hidden, targets)
        ref_logits = head(hidden)
    ref = F.cross_entropy(ref_logits.float(), targets, reduction="sum")
    assert probs.dtype == torch.float32 and torch.allclose(probs, ref_logits.float().softmax(-1))
    assert torch.allclose(loss, ref, rtol=1e-5)
    params = (emb.weight, head.dense.weight, head.bias)
    grads, ref_grads = torch.autograd.grad(loss, params), torch.autograd.grad(ref, params)
    for g, r in zip(grads, ref_grads, strict=True):
        assert g.dtype == r.dtype == torch.float32 and torch.allclose(g, r, rtol=2e-2, atol=1e-3)


def test_tied_lm_cross_entropy_under_bf16_autocast_in_row_chunks_matches_one_piece():
    # a vocabulary this wide makes the CPU path write logits and gradients in chunks of 4 rows (3 chunks here)
    torch.manual_seed(0)
    M, E, vocab = 10, 8, (1 << 16) + 3
    h = torch.randn(M, E, requires_grad=True)
    w = torch.randn(vocab, E, requires_grad=True)
    b = torch.randn(vocab, requires_grad=True)
    targets, row_weights = torch.randint(0, vocab, (M,)), (torch.arange(M) % 3 != 0).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, probs = tied_lm_cross_entropy(h, w, b, targets, row_weights)
    ref_logits = F.linear(h.bfloat16(), w.bfloat16(), b.bfloat16()).float()  # what one piece computes
    ref = (F.cross_entropy(ref_logits, targets, reduction="none") * row_weights).sum()
    assert torch.allclose(probs, ref_logits.softmax(-1), rtol=1e-4) and torch.allclose(loss, ref)
    for g, r in zip(torch.autograd.grad(loss, (h, w, b)), torch.autograd.grad(ref, (h, w, b)), strict=True):
        assert g.dtype == torch.float32 and torch.allclose(g, r, rtol=2e-2, atol=1e-4)


def test_discriminator_and_task_heads_shapes():
    config = tiny()
    ids, mask, types = batch()
    hidden = ConvBertModel(config)(ids, mask, types)
    assert DiscriminatorHead(config)(hidden).shape == (3, 24)
    cls = ConvBertForSequenceClassification(config, num_labels=3)
    assert cls(ids, mask, types).shape == (3, 3)
    assert ConvBertForSequenceClassification(config, num_labels=1)(ids, mask).shape == (3, 1)
    start, end, ans = ConvBertForQuestionAnswering(config)(ids, mask, types)
    assert start.shape == end.shape == (3, 24) and ans is None
    start, end, ans = ConvBertForQuestionAnswering(config, answerable=True)(ids, mask, types)
    assert ans.shape == (3,)
    # task models accept a pretrained backbone's weights
    backbone = ConvBertModel(config)
    cls.convbert.load_state_dict(backbone.state_dict())


@pytest.mark.parametrize("groups", [1, 2])
def test_feed_forward_matches_autograd(groups):
    torch.manual_seed(0)

    def linear(i: int, o: int) -> torch.nn.Module:
        lin = (torch.nn.Linear(i, o) if groups == 1 else GroupedLinear(i, o, groups)).double()
        torch.nn.init.normal_(lin.bias)
        return lin

    lin1, lin2 = linear(6, 8), linear(8, 6)
    x = torch.randn(2, 5, 6, dtype=torch.double, requires_grad=True)
    assert torch.allclose(feed_forward(x, lin1, lin2), lin2(F.gelu(lin1(x))))
    params = (lin1.weight, lin1.bias, lin2.weight, lin2.bias)
    assert torch.autograd.gradcheck(
        lambda x, w1, b1, w2, b2: feed_forward(x, _Params(w1, b1), _Params(w2, b2)), (x, *params))


def test_feed_forward_under_bf16_autocast_follows_the_autocast_path():
    torch.manual_seed(0)
    lin1, lin2 = torch.nn.Linear(16, 32), torch.nn.Linear(32, 16)
    x = torch.randn(4, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = feed_forward(x, lin1, lin2)
        ref = lin2(F.gelu(lin1(x)))
    assert ours.dtype == ref.dtype == torch.bfloat16 and torch.allclose(ours.float(), ref.float(), atol=1e-2)
    grads = torch.autograd.grad(ours.float().sum(), (x, lin1.weight, lin2.bias))
    ref_grads = torch.autograd.grad(ref.float().sum(), (x, lin1.weight, lin2.bias))
    for g, r in zip(grads, ref_grads, strict=True):
        assert g.dtype == r.dtype and torch.allclose(g, r, rtol=2e-2, atol=2e-2)


class _Params:
    def __init__(self, weight, bias):
        self.weight, self.bias = weight, bias


def test_attention_with_dropout_matches_reference():
    B, T, N, D, p = 2, 6, 2, 4, 0.3
    q, k, v = (torch.randn(B, T, N, D, dtype=torch.double, requires_grad=True) for _ in range(3))
    bias = torch.zeros(B, 1, 1, T, dtype=torch.double)
    bias[1, ..., 4:] = -1e9
    torch.manual_seed(5)
    out = self_attention(q, k, v, bias, p)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    torch.manual_seed(5)  # the same generator draw gives the same mask
    keep = _keep_mask(torch.empty(B, N, T, T), p)
    qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))
    probs = ((qh @ kh.transpose(-1, -2)) / D ** 0.5 + bias).softmax(-1)
    ref = ((probs * keep / (1 - p)) @ vh).transpose(1, 2)
    ref_grads = torch.autograd.grad(ref.square().sum(), (q, k, v))
    assert torch.allclose(out, ref)
    assert all(torch.allclose(g, r) for g, r in zip(grads, ref_grads, strict=True))
    no_drop = self_attention(q, k, v, bias, 0.0)  # SDPA path
    assert torch.allclose(no_drop, (probs @ vh).transpose(1, 2))
