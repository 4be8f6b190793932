"""The whole ELECTRA train step (both phases, losses, backward) compiles as one graph per phase, forward and
backward, with fullgraph=True: no host syncs or data-dependent shapes are left in it (docs/design.md §3).
CPU CI uses the aot_eager backend, which traces exactly what inductor would compile."""

import copy

import torch
from functorch.compile import make_boxed_func
from torch._dynamo.backends.common import aot_autograd

from convbert.config import ConvBertConfig
from convbert.electra import ElectraPretrainer, example_seeds, prepare_batch, train_step
from convbert.train import Precision

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4


def _batch(step: int, B: int = 4, T: int = 32, vocab: int = 300, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed + step)
    ids = torch.randint(5, vocab, (B, T), generator=g)
    attn = torch.ones(B, T, dtype=torch.long)
    attn[1, T // 2:] = 0  # one padded row
    ids[attn == 0] = PAD
    ids[:, 0], ids[0, T - 1] = CLS, SEP
    return {"input_ids": ids, "attention_mask": attn, "token_type_ids": torch.zeros_like(ids)}


class GraphCounter:
    """aot_eager with a count of the forward and backward graphs it was given."""

    def __init__(self):
        self.forward = self.backward = 0
        self.backend = aot_autograd(fw_compiler=self._fw, bw_compiler=self._bw)

    def _fw(self, gm, _inputs):
        self.forward += 1
        return make_boxed_func(gm.forward)

    def _bw(self, gm, _inputs):
        self.backward += 1
        return make_boxed_func(gm.forward)


def test_train_step_compiles_fullgraph_and_matches_eager():
    torch._dynamo.reset()
    torch.manual_seed(0)
    config = ConvBertConfig.from_preset("tiny", vocab_size=300, num_hidden_layers=1, hidden_dropout_prob=0.0,
                                        attention_probs_dropout_prob=0.0)
    eager = ElectraPretrainer(config).train()
    compiled = copy.deepcopy(eager)
    graphs = GraphCounter()
    compiled.compile(fullgraph=True, backend=graphs.backend)  # a graph break raises
    precision = Precision("fp32", torch.device("cpu"))
    for step in range(2):  # the second step, with other values, must reuse the graphs
        batch = prepare_batch(_batch(step), [PAD, CLS, SEP, MASK], MASK, example_seeds(5, step, 0, 4),
                              eager.objective)
        norms = torch.stack([batch["mask_valid"].sum(), batch["attention_mask"].sum()]).float()
        loss, stats = train_step(eager, batch, norms, precision)
        c_loss, c_stats = train_step(compiled, batch, norms, precision)
        assert torch.allclose(c_loss, loss, rtol=1e-5)
        for k, v in stats.items():
            assert torch.allclose(c_stats[k], v, rtol=1e-5), k
    # one forward and one backward graph per phase, none recompiled for the second step
    assert (graphs.forward, graphs.backward) == (2, 2)
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters(), strict=True):
        assert torch.allclose(q.grad, p.grad, rtol=1e-4, atol=1e-6), name
