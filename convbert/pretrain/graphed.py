"""The whole pretraining step as one function of device tensors (docs/design.md §3): the micro-batches in,
generator, sampling, discriminator, both backwards, gradient clipping and the AdamW update inside, the
summed statistics and the gradient norm out. Nothing in it reads a device value on the host or has a
data-dependent shape, so torch.compile traces it as one graph (fullgraph=True, backward included) and, on
CUDA with mode="reduce-overhead", replays it as one CUDA graph: one launch per step instead of thousands.

Per-step scalars (the learning rate) are device tensors; the optimizer's state tensors, the gradients and
the parameters keep fixed addresses, so a checkpoint written from a graphed run is an ordinary one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from convbert.electra import STAT_KEYS, stat_vector, train_step
from convbert.train.precision import Precision

# The batch keys a graphed step takes, in this order (prepare_batch's tensors)
BATCH_KEYS = ("input_ids", "attention_mask", "token_type_ids", "masked_ids", "mask_positions", "mask_valid",
              "seeds")


def cuda_graphs_reason(device: torch.device, precision: str, world_size: int, max_bad_steps: int,
                       compile: bool | str = "auto", asked: bool | str = "auto") -> str | None:
    """Why the graphed step cannot run in this setting (None: it can). trainer.cuda_graphs=auto (`asked`) turns
    it on exactly when this is None; true with a reason is a configuration error."""
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device (this run uses {device.type})"
    if compile is False:
        return "trainer.compile=false (the graph is what compiling the whole step gives)"
    if precision == "fp16":
        return "fp16's loss scaler decides on the host whether to skip a step (use bf16 or fp32)"
    if max_bad_steps:
        return "trainer.max_bad_steps > 0 reads every step's gradient norm on the host"
    if world_size > 1 and asked is not True:
        return ("several processes: the graph all-reduces the gradients itself (tested with gloo on CPU), but "
                "not yet on GPUs; trainer.cuda_graphs=true tries it")
    return None


def init_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Create the AdamW state the graph updates in place (torch's AdamW creates it lazily at its first step):
    moments at zero and a device step count, as torch's own step would. ElectraAdamW's state already exists."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state[p]
            if not state:
                state.update(step=torch.zeros((), device=p.device), exp_avg=torch.zeros_like(p),
                             exp_avg_sq=torch.zeros_like(p))
            elif state["step"].device != p.device:  # a checkpoint loaded on the CPU side of the step count
                state["step"] = state["step"].to(p.device)


@dataclass(frozen=True)
class AdamWGroup:
    """One optimizer parameter group as the graph sees it: its tensors and its hyper-parameters as constants
    (reading torch's param_groups inside the graph would guard on the scheduler's float lr and recompile)."""

    params: list[torch.Tensor]
    exp_avg: list[torch.Tensor]
    exp_avg_sq: list[torch.Tensor]
    steps: list[torch.Tensor]  # every parameter steps together: steps[0] is the group's count
    betas: tuple[float, float]
    eps: float
    weight_decay: float
    lr_scale: float


def adamw_groups(optimizer: torch.optim.Optimizer) -> list[AdamWGroup]:
    out = []
    for group in optimizer.param_groups:
        state = [optimizer.state[p] for p in group["params"]]
        out.append(AdamWGroup(list(group["params"]), [s["exp_avg"] for s in state], [s["exp_avg_sq"] for s in state],
                              [s["step"] for s in state], tuple(group["betas"]), group["eps"], group["weight_decay"],
                              group.get("lr_scale", 1.0)))
    return out


@torch.no_grad()
def adamw_update(groups: list[AdamWGroup], lr: torch.Tensor) -> None:
    """torch's AdamW update, written with foreach ops and a tensor lr so that it traces into the step's graph
    (torch.optim's step() breaks the graph on purpose). Per group, with bias corrections 1 - b**step (exactly
    1 for ElectraAdamW, whose step count is infinite):
        p *= 1 - lr wd;  m = lerp(m, g, 1 - b1);  v = b2 v + (1 - b2) g^2;  p -= lr/bc1 · m / (sqrt(v/bc2) + eps)."""
    for g in groups:
        grads = [p.grad for p in g.params]
        (b1, b2), group_lr = g.betas, lr * g.lr_scale
        torch._foreach_add_(g.steps, 1.0)
        if g.weight_decay:
            torch._foreach_mul_(g.params, 1.0 - group_lr * g.weight_decay)
        torch._foreach_lerp_(g.exp_avg, grads, 1.0 - b1)
        torch._foreach_mul_(g.exp_avg_sq, b2)
        torch._foreach_addcmul_(g.exp_avg_sq, grads, grads, 1.0 - b2)
        bc1, bc2 = 1.0 - b1 ** g.steps[0], 1.0 - b2 ** g.steps[0]
        denom = torch._foreach_div(g.exp_avg_sq, bc2)
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, g.eps)
        update = torch._foreach_div(g.exp_avg, denom)
        torch._foreach_mul_(update, group_lr / bc1)
        torch._foreach_sub_(g.params, update)


def flat_gradients(params: list[torch.Tensor]) -> torch.Tensor:
    """One buffer holding every parameter's gradient (p.grad becomes a view of it): the graph zeroes it with one
    op and, across ranks, all-reduces it with one collective."""
    dtypes = {p.dtype for p in params}
    if len(dtypes) != 1:
        raise ValueError(f"the graphed step needs parameters of one dtype, got {sorted(map(str, dtypes))}")
    flat = torch.zeros(sum(p.numel() for p in params), dtype=params[0].dtype, device=params[0].device)
    offset = 0
    for p in params:
        p.grad = flat[offset:offset + p.numel()].view_as(p)
        offset += p.numel()
    return flat


class GraphedStep:
    """One optimizer step of an ElectraPretrainer over `grad_accum` micro-batches as a single traced function.

    `backend`/`mode` go to torch.compile: on CUDA "inductor" + "reduce-overhead" (a CUDA graph); the CPU tests
    use "aot_eager", which traces the same graph without generating code. Every micro-batch runs with the
    attention mask (has_padding is a host bool that would split the graph in two), which computes the same
    result: a mask of ones masks nothing. Across ranks (world_size > 1, torch.distributed initialised; not
    wrapped in DDP) the graph all-reduces the gradients itself, as one collective; the statistics it returns stay
    this rank's. Build it after loading a checkpoint into the model and optimizer: it holds their tensors."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, precision: Precision,
                 max_grad_norm: float | None, grad_accum: int, backend: str = "inductor",
                 mode: str | None = "reduce-overhead", world_size: int = 1):
        if precision.scaler is not None:
            raise ValueError("the graphed step has no loss scaler: use bf16 or fp32")
        self.model, self.optimizer, self.precision = model, optimizer, precision
        self.max_grad_norm, self.grad_accum, self.world_size = max_grad_norm, grad_accum, world_size
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.lr = torch.zeros((), device=self.params[0].device)  # the step's learning rate, set before each replay
        init_optimizer_state(optimizer)
        self.groups = adamw_groups(optimizer)
        self.grads = flat_gradients(self.params)
        self._mark_static()
        self.calls = 0  # steps taken: the first one traces and compiles
        self._compiled = torch.compile(self._step, backend=backend, mode=mode, fullgraph=True)

    def _mark_static(self) -> None:
        """Gradients and optimizer state are mutated by the graph: marked static, a CUDA graph updates them in
        place instead of copying them in and out (or refusing to capture)."""
        torch._dynamo.mark_static_address(self.lr)
        torch._dynamo.mark_static_address(self.grads)
        for p in self.params:
            for value in self.optimizer.state[p].values():
                if isinstance(value, torch.Tensor):
                    torch._dynamo.mark_static_address(value)

    def _step(self, batches: list[dict[str, torch.Tensor]], norms: torch.Tensor, lr: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        self.grads.zero_()
        window = torch.zeros(len(STAT_KEYS), dtype=torch.float64, device=norms.device)
        for b in batches:
            _, stats = train_step(self.model, {**b, "has_padding": True}, norms, self.precision)
            window = window + stat_vector(stats)
        if self.world_size > 1:  # every rank's share of the global loss (norms are global): their sum is the gradient
            torch.distributed.all_reduce(self.grads)
        clip = self.max_grad_norm or float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, clip, foreach=True)
        adamw_update(self.groups, lr)
        return window, grad_norm

    def __call__(self, batches: list[dict[str, Any]], norms: torch.Tensor, lr: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step at learning rate `lr` -> (the step's summed statistics, STAT_KEYS order, fp64 [9]; the
        gradient norm before clipping). Read or add them up before the next call, which may reuse their memory.
        The gradients stay allocated between steps (do not zero_grad(set_to_none=True))."""
        first = self.groups[0]
        if self.optimizer.state[first.params[0]]["exp_avg"] is not first.exp_avg[0]:
            raise RuntimeError("the optimizer's state was replaced after the graphed step was built (load_state_dict): "
                               "build the GraphedStep after loading a checkpoint")
        if len(batches) != self.grad_accum:
            raise ValueError(f"expected {self.grad_accum} micro-batches, got {len(batches)}")
        tensors = [{k: b[k] for k in BATCH_KEYS} for b in batches]
        if norms.is_cuda:  # a new step: the previous replay's outputs may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        self.lr.fill_(lr)
        # after the first step a recompile is an error, not a slow step: the shapes are fixed, so it would mean
        # that something the graph depends on changed behind its back (and a retrace of backward() is not safe)
        stance = "fail_on_recompile" if self.calls else "default"
        try:
            with torch._dynamo.config.patch(trace_autograd_ops=True), torch.compiler.set_stance(stance):
                out = self._compiled(tensors, norms, self.lr)
        except RuntimeError as e:
            if "recompil" not in str(e).lower():
                raise
            shapes = {k: tuple(v.shape) for k, v in tensors[0].items()}
            raise RuntimeError(f"the graphed step would be recompiled (micro-batch shapes {shapes}); its inputs must "
                               "keep their shapes and dtypes, or set trainer.cuda_graphs=false") from e
        self.calls += 1
        return out
