"""Mixed-precision helper: argument checks and the bf16-on-CPU speed warning."""

import math
import warnings

import pytest
import torch

from convbert.train import Precision
from convbert.train.precision import resolve_precision


def test_unknown_precision_and_autocast_less_devices_are_refused():
    with pytest.raises(ValueError, match="precision must be one of"):
        Precision("fp8", torch.device("cpu"))
    with pytest.raises(ValueError, match="needs autocast"):
        Precision("bf16", torch.device("meta"))
    assert Precision("fp16", torch.device("cpu")).scaler is not None  # CPU fp16 autocast: tested, not fast


def test_bf16_on_a_cpu_warns_when_its_measured_bf16_matmuls_are_slower():
    from convbert.train.precision import _cpu_has_fast_bf16, cpu_bf16_speedup

    torch.manual_seed(0)
    expected = torch.rand(4)
    cpu_bf16_speedup.cache_clear()
    torch.manual_seed(0)
    speedup = cpu_bf16_speedup()
    assert torch.equal(torch.rand(4), expected)  # measuring leaves the global random stream where it was
    assert speedup > 0 and cpu_bf16_speedup() == speedup  # measured once per process
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Precision("bf16", torch.device("cpu"))
        Precision("fp32", torch.device("cpu"))
    messages = [str(w.message) for w in caught]
    if _cpu_has_fast_bf16():
        assert messages == []
    else:
        assert len(messages) == 1 and f"{speedup:.2f}x the fp32" in messages[0] and "fp32 is faster" in messages[0]


# ---- a few ELECTRA steps in half precision, and resuming them --------------------------------------

def _run(kind: str, steps: int, resume_at: int | None = None, seed: int = 0):
    """`steps` ELECTRA steps of a 1-layer tiny model (dropout on); with resume_at, everything a checkpoint
    holds (weights, optimizer, scaler, RNG) is saved there and loaded into fresh objects that finish the run.
    Returns (final weights, losses, grad norms, scaler state)."""
    from convbert.config import ConvBertConfig
    from convbert.electra import ElectraPretrainer, example_seeds, prepare_batch, train_step
    from convbert.train import build_optimizer

    def build():
        torch.manual_seed(seed)
        model = ElectraPretrainer(ConvBertConfig.from_preset("tiny", vocab_size=300, num_hidden_layers=1))
        return model.train(), build_optimizer(model, 1e-3, 0.01), Precision(kind, torch.device("cpu"))

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 300, (4, 24), generator=g)
    ids[:, 0], ids[:, -1] = 2, 3
    attn = torch.ones_like(ids)
    attn[2, 16:] = 0
    ids[attn == 0] = 0
    data = {"input_ids": ids, "attention_mask": attn, "token_type_ids": torch.zeros_like(ids)}
    model, optimizer, precision = build()
    losses, norms = [], []
    for step in range(steps):
        if step == resume_at:
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scaler": precision.state_dict(), "rng": torch.get_rng_state()}
            state = torch.load(_roundtrip(state), weights_only=False)
            model, optimizer, precision = build()
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            precision.load_state_dict(state["scaler"])
            torch.set_rng_state(state["rng"])
        batch = prepare_batch(data, [0, 2, 3, 4], 4, example_seeds(seed, step, 0, 4), model.objective)
        n = torch.stack([batch["mask_valid"].sum(), attn.sum()]).float()
        loss, _ = train_step(model, batch, n, precision)
        norm = precision.step(optimizer, [p for p in model.parameters()], 1.0)
        assert isinstance(norm, torch.Tensor) and norm.dim() == 0  # read by the caller when it logs
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss))
        norms.append(float(norm))
    return model.state_dict(), losses, norms, precision.state_dict()


def _roundtrip(state):
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return buf


def test_fp16_with_grad_scaler_steps_are_finite_and_resume_restores_the_scaler():
    weights, losses, norms, scaler = _run("fp16", 3)
    assert all(math.isfinite(v) for v in losses)
    assert scaler["scale"] > 0 and scaler["_growth_tracker"] >= 0
    assert all(torch.isfinite(w).all() for w in weights.values())
    resumed, r_losses, r_norms, r_scaler = _run("fp16", 3, resume_at=2)
    assert r_losses == losses and r_norms == norms and r_scaler == scaler
    assert all(torch.equal(resumed[k], weights[k]) for k in weights)


@pytest.mark.filterwarnings("ignore:precision=bf16 on this CPU")
def test_bf16_resume_is_bit_identical():
    weights, losses, norms, _ = _run("bf16", 3)
    resumed, r_losses, r_norms, _ = _run("bf16", 3, resume_at=2)
    assert r_losses == losses and r_norms == norms
    assert all(torch.equal(resumed[k], weights[k]) for k in weights)


def test_auto_precision_is_bf16_only_on_native_bf16_gpus():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32"  # also on CPUs with AMX: bf16 there is a choice to make
    assert [resolve_precision(k, cpu) for k in ("fp32", "bf16", "fp16")] == ["fp32", "bf16", "fp16"]
