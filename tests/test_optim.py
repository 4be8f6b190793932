"""AdamW groups (weight decay, layer-wise lr decay) and the lr schedule, checked against ELECTRA's formulas."""

from __future__ import annotations

import pytest
import torch

from convbert.config import ConvBertConfig
from convbert.model import ConvBertForSequenceClassification
from convbert.train import build_optimizer, linear_schedule


def test_schedule_is_electras_warmup_times_linear_decay():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = linear_schedule(opt, warmup_steps=10, total_steps=100)
    lrs = []
    for _ in range(101):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [2.0 * min(1.0, s / 10) * (1 - s / 100) for s in range(101)]  # ELECTRA's optimization.py
    assert lrs == pytest.approx(expected)
    assert lrs[0] == 0.0 and lrs[10] == pytest.approx(1.8) and lrs[100] == 0.0  # peak lr·(1 - W/T), no jump


@pytest.mark.parametrize("variant, offset", [("electra", 2), ("standard", 1)])
def test_layer_decay_and_no_weight_decay_groups(variant, offset):
    config = ConvBertConfig.from_preset("tiny", vocab_size=100, num_hidden_layers=3)
    model = ConvBertForSequenceClassification(config, num_labels=2)
    opt = build_optimizer(model, lr=1.0, weight_decay=0.01, layer_decay=0.5, layer_decay_variant=variant)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    wd_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    L = config.num_hidden_layers
    for name, p in model.named_parameters():
        if name.startswith("convbert.embeddings"):
            depth = 0
        elif name.startswith("convbert.layers."):
            depth = int(name.split(".")[2]) + 1
        else:  # the task head
            depth = None
        expected = 1.0 if depth is None else 0.5 ** (L + offset - depth)
        assert lr_of[id(p)] == pytest.approx(expected), name
        no_decay = p.ndim < 2  # LayerNorm weights and biases
        assert wd_of[id(p)] == (0.0 if no_decay else 0.01), name


def test_electra_adamw_follows_electras_update_rule():
    """BERT/ELECTRA's AdamWeightDecayOptimizer in float64 by hand: no bias correction, decay in the update."""
    torch.manual_seed(0)
    w, b = torch.nn.Parameter(torch.randn(3, 4, dtype=torch.float64)), torch.nn.Parameter(torch.randn(4).double())
    model = torch.nn.Linear(4, 3).double()
    model.weight, model.bias = w, b
    opt = build_optimizer(model, lr=0.1, weight_decay=0.01, betas=(0.9, 0.999), eps=1e-6)
    assert type(opt).__name__ == "ElectraAdamW"
    ref = {"w": (w.detach().clone(), 0.01), "b": (b.detach().clone(), 0.0)}  # no decay on the bias
    moments = {k: (torch.zeros_like(p), torch.zeros_like(p)) for k, (p, _) in ref.items()}
    for _ in range(3):
        grads = {"w": torch.randn(3, 4, dtype=torch.float64), "b": torch.randn(4, dtype=torch.float64)}
        w.grad, b.grad = grads["w"].clone(), grads["b"].clone()
        opt.step()
        for k, (p, wd) in ref.items():
            m, v = moments[k]
            m, v = 0.9 * m + 0.1 * grads[k], 0.999 * v + 0.001 * grads[k] ** 2
            moments[k] = (m, v)
            ref[k] = (p - 0.1 * (m / (v.sqrt() + 1e-6) + wd * p), wd)
    torch.testing.assert_close(w.detach(), ref["w"][0], rtol=0, atol=1e-12)
    torch.testing.assert_close(b.detach(), ref["b"][0], rtol=0, atol=1e-12)
    resumed = build_optimizer(model, lr=0.1, weight_decay=0.01)  # a checkpoint's state carries over
    resumed.load_state_dict(opt.state_dict())
    for p in (w, b):
        assert torch.isinf(resumed.state[p]["step"])
        assert torch.equal(resumed.state[p]["exp_avg"], opt.state[p]["exp_avg"])
    bias_corrected = build_optimizer(model, lr=0.1, bias_correction=True)
    assert isinstance(bias_corrected, torch.optim.AdamW)
