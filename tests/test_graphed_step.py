"""The whole ELECTRA optimizer step as one traced graph (convbert/pretrain/graphed.py): generator, sampling,
discriminator, both backwards, clipping and AdamW compile with fullgraph=True, do not recompile for new batches
or learning rates, and train exactly as the eager step does. CPU CI uses the aot_eager backend, which traces
what inductor compiles (and what a CUDA graph then replays) without generating code."""

import copy

import pytest
import torch
from helpers import run_entry, run_process, spawn_ranks
from torch._dynamo.utils import counters

from convbert.config import ConvBertConfig
from convbert.electra import ElectraObjective, ElectraPretrainer, example_seeds, prepare_batch, stat_vector, train_step
from convbert.pretrain.graphed import GraphedStep, cuda_graphs_reason
from convbert.train import Precision
from convbert.train.optim import build_optimizer

PAD, CLS, SEP, MASK = 0, 2, 3, 4
CPU = torch.device("cpu")


def _micro_batch(step: int, a: int, B: int = 4, T: int = 32, vocab: int = 300) -> dict:
    g = torch.Generator().manual_seed(1000 * step + a)
    ids = torch.randint(5, vocab, (B, T), generator=g)
    attn = torch.ones(B, T, dtype=torch.long)
    attn[1, T // 2 + step % 5:] = 0  # the padding moves from step to step
    ids[attn == 0] = PAD
    ids[:, 0] = CLS
    seeds = example_seeds(7, step, a * B, B)
    return prepare_batch({"input_ids": ids, "attention_mask": attn, "token_type_ids": torch.zeros_like(ids)},
                         [PAD, CLS, SEP, MASK], MASK, seeds, ElectraObjective())


def _norms(batches: list[dict]) -> torch.Tensor:
    return torch.stack([sum(b["mask_valid"].sum() for b in batches),
                        sum(b["attention_mask"].sum() for b in batches)]).float()


def _pretrainer(**kw) -> ElectraPretrainer:
    torch.manual_seed(0)
    config = ConvBertConfig.from_preset("tiny", vocab_size=300, num_hidden_layers=1, hidden_dropout_prob=0.0,
                                        attention_probs_dropout_prob=0.0, **kw)
    return ElectraPretrainer(config).train()


def _eager_step(model, optimizer, precision, batches, lr: float) -> torch.Tensor:
    norms, window = _norms(batches), torch.zeros(9, dtype=torch.float64)
    for b in batches:
        window += stat_vector(train_step(model, b, norms, precision)[1])
    for group in optimizer.param_groups:
        group["lr"] = lr
    precision.step(optimizer, [p for p in model.parameters() if p.requires_grad], 1.0)
    optimizer.zero_grad(set_to_none=True)
    return window


@pytest.mark.parametrize("bias_correction", [False, True], ids=["electra adamw", "torch adamw"])
def test_the_graphed_step_trains_as_the_eager_step_without_recompiling(bias_correction):
    torch._dynamo.reset()
    counters.clear()
    eager = _pretrainer()
    graphed = copy.deepcopy(eager)
    precision = Precision("fp32", CPU)
    opt_eager = build_optimizer(eager, 1e-3, bias_correction=bias_correction)
    opt_graphed = build_optimizer(graphed, 1e-3, bias_correction=bias_correction)
    step = GraphedStep(graphed, opt_graphed, precision, max_grad_norm=1.0, grad_accum=2, backend="aot_eager",
                       mode=None)
    for s in range(10):  # new batches, new padding and a new learning rate every step
        batches, lr = [_micro_batch(s, a) for a in range(2)], 1e-3 * (1 + s) / 10
        window = _eager_step(eager, opt_eager, precision, batches, lr)
        for group in opt_graphed.param_groups:  # as the lr scheduler does: the graph must not depend on it
            group["lr"] = lr
        g_window, _ = step(batches, _norms(batches), lr)
        assert torch.allclose(g_window, window, rtol=1e-4), s
    for (name, p), q in zip(eager.named_parameters(), graphed.parameters(), strict=True):
        assert torch.allclose(q, p, rtol=1e-4, atol=1e-5), name
    assert counters["stats"]["unique_graphs"] == 1 and not counters["recompiles"]
    longer = [_micro_batch(10, a, T=48) for a in range(2)]
    with pytest.raises(RuntimeError, match=r"would be recompiled \(micro-batch shapes .*'input_ids': \(4, 48\)"):
        step(longer, _norms(longer), 1e-3)



def test_graphed_step_resumes_exactly():
    """A checkpoint of a graphed run is an ordinary one: weights and AdamW state restored into a fresh model and a
    fresh graphed step continue exactly as the uninterrupted run."""
    torch._dynamo.reset()
    precision, batches = Precision("fp32", CPU), [[_micro_batch(s, 0)] for s in range(4)]

    def graphed(model: ElectraPretrainer, optim_state: dict | None = None) -> tuple[GraphedStep, torch.optim.Optimizer]:
        optimizer = build_optimizer(model, 1e-3)
        if optim_state is not None:
            optimizer.load_state_dict(optim_state)
        return GraphedStep(model, optimizer, precision, 1.0, 1, backend="aot_eager", mode=None), optimizer

    whole = _pretrainer()
    step, _ = graphed(whole)
    first = _pretrainer()
    first_step, first_opt = graphed(first)
    for s, b in enumerate(batches):
        step(b, _norms(b), 1e-3)
        if s < 2:
            first_step(b, _norms(b), 1e-3)
    saved = copy.deepcopy({"model": first.state_dict(), "optim": first_opt.state_dict()})
    resumed = _pretrainer()
    resumed.load_state_dict(saved["model"])
    resumed_step, resumed_opt = graphed(resumed, saved["optim"])
    for b in batches[2:]:
        resumed_step(b, _norms(b), 1e-3)
    for (name, p), q in zip(whole.named_parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q), name
    resumed_opt.load_state_dict(copy.deepcopy(saved["optim"]))  # new state tensors the graph would not update
    with pytest.raises(RuntimeError, match="replaced after the graphed step was built"):
        resumed_step(batches[0], _norms(batches[0]), 1e-3)


def test_where_cuda_graphs_can_run():
    cuda = torch.device("cuda")
    assert cuda_graphs_reason(cuda, "bf16", 1, 0) is None and cuda_graphs_reason(cuda, "fp32", 1, 0, True) is None
    assert "CUDA device (this run uses cpu)" in cuda_graphs_reason(CPU, "bf16", 1, 0)
    assert "loss scaler" in cuda_graphs_reason(cuda, "fp16", 1, 0)
    assert "several processes" in cuda_graphs_reason(cuda, "bf16", 2, 0)  # auto: not yet measured on GPUs
    assert cuda_graphs_reason(cuda, "bf16", 2, 0, asked=True) is None
    assert "max_bad_steps" in cuda_graphs_reason(cuda, "bf16", 1, 3)
    assert "trainer.compile=false" in cuda_graphs_reason(cuda, "bf16", 1, 0, False)


TINY_RUN = ["corpus.max_bytes=30000", "tokenizer.vocab_size=400", "max_seq_length=32", "model.num_hidden_layers=1",
            "trainer.batch_size=4", "optim.warmup_steps=1", "trainer.log_every=1", "trainer.progress=false",
            "trainer.threads=1", "tracking=disabled", "trainer.eval_examples=0", "model.hidden_dropout_prob=0.0",
            "model.attention_probs_dropout_prob=0.0", "trainer.max_steps=4", "trainer.ckpt_every=2"]


def test_cuda_graphs_true_where_they_cannot_run_is_an_error_before_any_file(tmp_path):
    run_dir, data_dir = tmp_path / "run", tmp_path / "data"
    proc = run_process(["-m", "pipelines.pretrain", *TINY_RUN, f"data_dir={data_dir}", f"hydra.run.dir={run_dir}",
                        "trainer.device=cpu", "trainer.cuda_graphs=true"], timeout=120)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "error: trainer.cuda_graphs=true: CUDA graphs need a CUDA device (this run uses cpu)" in proc.stderr
    assert not run_dir.exists() and not data_dir.exists()


@pytest.mark.slow  # three short pretraining runs
def test_the_engine_trains_and_resumes_with_the_graphed_step(tmp_path, monkeypatch, capsys):
    """The pretraining loop with trainer.cuda_graphs on: a CPU has no CUDA graphs, so here the engine builds its
    graphed step with the aot_eager backend (the same traced graph, no code generation). Stopped at step 2 and
    resumed, it ends where the eager run ends."""
    import functools

    from convbert.pretrain import graphed as graphs
    from convbert.train import load_checkpoint

    data = [f"data_dir={tmp_path / 'data'}"]
    run_entry("pretrain", *TINY_RUN, *data, "trainer.cuda_graphs=false", run_dir=tmp_path / "eager")
    monkeypatch.setattr(graphs, "cuda_graphs_reason", lambda *a, **k: None)
    monkeypatch.setattr(graphs, "GraphedStep", functools.partial(GraphedStep, backend="aot_eager", mode=None))
    torch._dynamo.reset()
    for stop in ("trainer.stop_after=2", "trainer.stop_after=null"):
        run_entry("pretrain", *TINY_RUN, *data, stop, run_dir=tmp_path / "graphed")
    assert capsys.readouterr().out.count("cuda graphs: the whole step is compiled as one graph") == 2
    # under auto, a graph that cannot be built in the first steps leaves the run on the compiled step
    def no_capture(gm, inputs):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(graphs, "GraphedStep", functools.partial(GraphedStep, backend=no_capture, mode=None))
    run_entry("pretrain", *TINY_RUN, *data, run_dir=tmp_path / "fallback")
    assert "cuda graphs off: building the graphed step failed (BackendCompilerFailed" in capsys.readouterr().out
    eager, graphed, fallback = (load_checkpoint(tmp_path / r / "checkpoints" / "step_00000004.pt")["model"]
                                for r in ("eager", "graphed", "fallback"))
    for name, w in eager.items():
        assert torch.allclose(graphed[name], w, rtol=1e-4, atol=1e-5), name
        assert torch.equal(fallback[name], w), name


def _ranks_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    """Rank `rank` runs 2 graphed steps on its half of each global batch (2 micro-batches of 2 examples)."""
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model = _pretrainer()
    step = GraphedStep(model, build_optimizer(model, 1e-3), Precision("fp32", CPU), 1.0, 2, backend="aot_eager",
                       mode=None, world_size=world)
    for s in range(2):
        batches = [_micro_batch(s, a) for a in range(2)]  # the global batch: 2 micro-batches of 4
        mine = [{k: v[2 * rank:2 * rank + 2] if isinstance(v, torch.Tensor) else v for k, v in b.items()}
                for b in batches]
        step(mine, _norms(batches), 1e-3)
    torch.save({n: p.detach() for n, p in model.named_parameters()}, f"{out_dir}/weights{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow  # two processes
def test_graphed_step_across_ranks_equals_one_process(tmp_path):
    """Two gloo ranks, each with half of every micro-batch, all-reducing the gradients inside the graph (no
    DDP wrapper), end with the weights of one process that saw whole batches."""
    torch._dynamo.reset()
    model = _pretrainer()
    step = GraphedStep(model, build_optimizer(model, 1e-3), Precision("fp32", CPU), 1.0, 2, backend="aot_eager",
                       mode=None)
    for s in range(2):
        batches = [_micro_batch(s, a) for a in range(2)]
        step(batches, _norms(batches), 1e-3)
    spawn_ranks(_ranks_worker, 2, str(tmp_path))
    for rank in range(2):
        weights = torch.load(tmp_path / f"weights{rank}.pt")
        for n, p in model.named_parameters():
            assert torch.allclose(weights[n], p, rtol=1e-4, atol=1e-6), (rank, n)
