"""ELECTRA objective: masking statistics (docs/design.md §3), sampling, loss normalisation."""

import pytest
import torch
from helpers import spawn_ranks

from convbert.config import ConvBertConfig
from convbert.electra import (
    ElectraObjective,
    ElectraPretrainer,
    as_seed_tensor,
    example_seeds,
    mask_tokens,
    max_predictions,
    prepare_batch,
    sample_tokens,
    sample_uniforms,
    train_step,
)
from convbert.train import Precision

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
SPECIALS = [PAD, UNK, CLS, SEP, MASK]


def _batch(lengths: list[int], T: int = 64, vocab: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.zeros(len(lengths), T, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(10, vocab, (n,), generator=g)
        ids[i, 0], ids[i, n - 1] = CLS, SEP
        if n > 20:
            ids[i, n // 2] = SEP  # [CLS] A [SEP] B [SEP]
    return ids, (ids != PAD).long()


def test_masking_counts_positions_and_split():
    lengths = [64, 40, 17, 5, 3, 64, 63, 10] * 50
    ids, attn = _batch(lengths)
    obj = ElectraObjective()
    m = mask_tokens(ids, attn, SPECIALS, MASK, example_seeds(1, 0, 0, len(lengths)), obj)
    masked_ids, masked = m.masked_ids, m.dense()
    assert m.positions.shape == (len(lengths), max_predictions(64, 0.15)) == (len(lengths), 10)
    assert torch.equal(masked.sum(1), m.valid.sum(1))  # valid slots hold distinct masked positions
    real = attn.sum(1)
    expected = torch.round(real.float() * 0.15).long().clamp(min=1)  # round half to even, as ELECTRA
    assert torch.equal(masked.sum(1), expected)
    assert not masked[(ids == CLS) | (ids == SEP) | (ids == PAD)].any()  # never specials or padding
    shown_as_mask = (masked_ids == MASK) & masked
    frac = shown_as_mask.sum().item() / masked.sum().item()
    assert abs(frac - 0.85) < 0.03  # 85% [MASK], the rest keep the original token
    assert torch.equal(masked_ids[masked & ~shown_as_mask], ids[masked & ~shown_as_mask])
    assert torch.equal(masked_ids[~masked], ids[~masked])  # no random-token replacement anywhere


def test_max_predictions_is_electras_max_predictions_per_seq():
    assert max_predictions(128, 0.15) == 19  # ELECTRA's setting for T = 128
    assert max_predictions(512, 0.15) == 77  # the tight bound round(0.15 T): no slot is ever unused by all rows
    assert max_predictions(10, 0.15) == 2  # round(1.5) in fp32, as mask_tokens counts (ELECTRA computes in fp32)
    ids, attn = _batch([10, 10, 9], T=10)
    m = mask_tokens(ids, attn, SPECIALS, MASK, example_seeds(0, 0, 0, 3), ElectraObjective())
    assert m.positions.shape == (3, 2) and m.valid.sum(1).tolist() == [2, 2, 1]


def test_masking_is_keyed_per_example_not_per_batch():
    ids, attn = _batch([64, 50, 30, 20])
    obj = ElectraObjective()
    full = mask_tokens(ids, attn, SPECIALS, MASK, example_seeds(7, 3, 0, 4), obj)
    # the second half of the global batch on another rank: positions 2 and 3
    half = mask_tokens(ids[2:], attn[2:], SPECIALS, MASK, example_seeds(7, 3, 2, 2), obj)
    for a, b in zip(full, half, strict=True):
        assert torch.equal(a[2:], b)
    other_step = mask_tokens(ids, attn, SPECIALS, MASK, example_seeds(7, 4, 0, 4), obj)
    assert not torch.equal(other_step.masked_ids, full.masked_ids)


def test_sampling_follows_the_distribution_at_any_temperature():
    probs = torch.tensor([0.7, 0.2, 0.1, 0.0]).repeat(1, 4000, 1)  # [1 example, 4000 slots, V]
    u = sample_uniforms(as_seed_tensor([123]), 4000)
    for t in (1.0, 2.0):
        samples = sample_tokens(probs, u, t).flatten()
        freq = torch.bincount(samples, minlength=4).float() / 4000
        expected = probs[0, 0] ** (1 / t) / (probs[0, 0] ** (1 / t)).sum()  # softmax(logits / t)
        assert torch.allclose(freq, expected, atol=0.03), (t, freq)
        assert freq[3] == 0  # a zero-probability token is never drawn
    # the edges of the uniform's range still land on tokens with mass
    edge = sample_tokens(probs[:, :2], torch.tensor([[0.0, 1.0 - 2.0**-53]], dtype=torch.float64))
    assert edge.tolist() == [[0, 2]]
    nan = sample_tokens(torch.full((1, 2, 4), float("nan")), u[:, :2])  # a diverged generator
    assert ((0 <= nan) & (nan < 4)).all()  # still token ids: the trainer's non-finite check handles the step


def test_sampling_uniforms_have_53_bits_and_differ_by_slot():
    u = sample_uniforms(as_seed_tensor(example_seeds(0, 0, 0, 4)), 1000)
    assert u.dtype == torch.float64 and u.shape == (4, 1000)
    assert 0.0 <= u.min() and u.max() < 1.0 and abs(u.mean().item() - 0.5) < 0.02
    assert (u * 2.0**24 % 1 != 0).any()  # finer than an fp32 uniform
    assert len(set(u.flatten().tolist())) == u.numel()


def test_sampling_is_keyed_per_row_whatever_the_chunking():
    probs = torch.randn(3, 20, 9000).softmax(-1)  # 540k CDF elements: sampled in chunks of rows
    u = sample_uniforms(as_seed_tensor(example_seeds(0, 0, 0, 3)), 20)
    full = sample_tokens(probs, u)
    one_by_one = torch.stack([torch.stack([sample_tokens(probs[b, p], u[b, p]) for p in range(20)])
                              for b in range(3)])
    assert torch.equal(full, one_by_one)
    assert not torch.equal(full, probs.argmax(-1))  # the draws do change samples


def _tiny_model(**kw) -> ElectraPretrainer:
    torch.manual_seed(0)
    config = ConvBertConfig.from_preset("tiny", vocab_size=500, num_hidden_layers=1, **kw)
    return ElectraPretrainer(config)


def _step_inputs(model: ElectraPretrainer, lengths=(64, 40, 30, 64)) -> tuple[dict, torch.Tensor]:
    ids, attn = _batch(list(lengths))
    seeds = example_seeds(1, 0, 0, len(lengths))
    batch = prepare_batch({"input_ids": ids, "attention_mask": attn, "token_type_ids": torch.zeros_like(ids)},
                          SPECIALS, MASK, seeds, model.objective)
    return batch, torch.tensor([batch["mask_valid"].sum(), attn.sum()]).float()


def _part(batch: dict, s: slice) -> dict:
    return {k: v[s] if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def test_replaced_labels_and_loss_normalisation():
    model = _tiny_model(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).eval()
    assert model.generator.embeddings is model.discriminator.embeddings  # shared embedding layer
    assert model.generator_head.word_embeddings is model.discriminator.embeddings.word_embeddings  # tied
    batch, norms = _step_inputs(model)
    loss, stats = train_step(model, batch, norms, Precision("fp32", torch.device("cpu")))
    assert stats["replaced"] <= stats["masked"]  # replaced only where masked
    expected = stats["mlm_loss_sum"] / norms[0] + 50.0 * stats["rtd_loss_sum"] / norms[1]
    assert torch.allclose(loss, expected)
    # splitting the batch in two halves with the global normalisers gives the same total loss
    halves = [train_step(model, _part(batch, s), norms, Precision("fp32", torch.device("cpu")))[0]
              for s in (slice(0, 2), slice(2, 4))]
    assert torch.allclose(halves[0] + halves[1], loss, atol=1e-5)


def test_two_phase_step_gives_the_gradients_of_the_summed_loss():
    model = _tiny_model().double().train()
    batch, norms = _step_inputs(model)
    torch.manual_seed(3)  # same dropout draws in both runs: generator first, then discriminator
    loss, _ = train_step(model, batch, norms.double(), Precision("fp32", torch.device("cpu")))
    two_phase = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    torch.manual_seed(3)
    gen_loss, corrupted, _ = model("generator_phase", batch["input_ids"], batch["masked_ids"],
                                   batch["mask_positions"], batch["mask_valid"], batch["attention_mask"],
                                   batch["token_type_ids"], batch["seeds"], norms.double())
    disc_loss, _ = model("discriminator_phase", batch["input_ids"], corrupted, batch["attention_mask"],
                         batch["token_type_ids"], norms.double())
    (gen_loss + disc_loss).backward()  # one backward of the whole ELECTRA loss
    assert torch.allclose(gen_loss + disc_loss, loss)
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, two_phase[n], rtol=1e-10, atol=1e-12), n
    assert two_phase["discriminator.embeddings.word_embeddings.weight"].abs().sum() > 0


def test_phase_name_is_checked():
    with pytest.raises(ValueError, match="phase must be one of"):
        _tiny_model()("both")


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import os

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model = _tiny_model(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    batch, norms = _step_inputs(model)
    net = DistributedDataParallel(model, find_unused_parameters=True)
    for a in range(2):  # two accumulation micro-batches per rank; global position a * world + rank
        part = _part(batch, slice(a * world + rank, a * world + rank + 1))
        train_step(net, part, norms, Precision("fp32", torch.device("cpu")), float(world), sync=a == 1)
    torch.save({n: p.grad for n, p in model.named_parameters()}, f"{out_dir}/grads{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_with_accumulation_gives_the_full_batch_gradients(tmp_path):
    model = _tiny_model(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    batch, norms = _step_inputs(model)
    train_step(model, batch, norms, Precision("fp32", torch.device("cpu")))
    spawn_ranks(_ddp_worker, 2, str(tmp_path))
    for rank in range(2):
        grads = torch.load(tmp_path / f"grads{rank}.pt")
        for n, p in model.named_parameters():  # generator-only parameters included
            assert torch.allclose(grads[n], p.grad, atol=1e-6), (rank, n)
