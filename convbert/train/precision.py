"""Mixed precision: autocast context, optional fp16 grad scaler, clipped optimizer step, device defaults."""

from __future__ import annotations

import contextlib
import functools
import math
import time
import warnings

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@functools.cache
def cpu_bf16_speedup() -> float:
    """This CPU's bf16 / fp32 matmul rate, measured once per process (best of 5 products of 256x1024x1024 in
    each dtype, alternating so that a busy machine slows both alike; ~100 ms). Without AMX it depends on the
    chip: 0.55 on one AVX512-BF16 development machine, 2.2-2.7 on another (AMD EPYC), so it is measured
    rather than guessed from CPU flags."""
    g = torch.Generator().manual_seed(0)  # its own generator: measuring must not move the run's random stream
    a, b = torch.randn(256, 1024, generator=g), torch.randn(1024, 1024, generator=g)
    pairs = {dtype: (a.to(dtype), b.to(dtype)) for dtype in (torch.float32, torch.bfloat16)}
    times: dict[torch.dtype, list[float]] = {dtype: [] for dtype in pairs}
    for _ in range(6):
        for dtype, (x, y) in pairs.items():
            t0 = time.perf_counter()
            x @ y
            times[dtype].append(time.perf_counter() - t0)
    fp32_s, bf16_s = (min(t[1:]) for t in times.values())  # the first round warms up
    return fp32_s / bf16_s


def _cpu_has_fast_bf16() -> bool:
    """AMX tiles make CPU bf16 matmuls fast; without them, whether bf16 beats fp32 is measured."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private helper, absent in some versions
    return (probe is not None and bool(probe())) or cpu_bf16_speedup() >= 1.0


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matmuls run natively (and fast) on `device`: CUDA compute capability >= 8.0 (Ampere on),
    not the emulated path that torch.cuda.is_bf16_supported() also counts; CPUs with AMX, or whose bf16
    matmuls measured faster than fp32 (cpu_bf16_speedup)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return _cpu_has_fast_bf16()
    return True


def auto_precision(device: torch.device) -> str:
    """precision=auto: bf16 where it is native on a GPU, else fp32 (fp16 needs loss scaling: ask for it)."""
    return "bf16" if device.type == "cuda" and native_bf16(device) else "fp32"


def resolve_precision(kind: str, device: torch.device) -> str:
    """A configured precision, with auto resolved for `device` (auto_precision)."""
    return auto_precision(device) if kind == "auto" else kind


class Precision:
    """One precision setting for a run. On CUDA, fp32 matmuls and convolutions use TF32 tensor cores
    (`tf32=True`, the default: ~8x the fp32 rate at 10-bit mantissa products, fp32 accumulation, which
    BERT-style training tolerates); fp16 gets a dynamic GradScaler (on CPU too, where torch supports fp16
    autocast: useful to test the path, not fast)."""

    def __init__(self, kind: str, device: torch.device, tf32: bool = True):
        if kind not in DTYPES:
            raise ValueError(f"precision must be one of {sorted(DTYPES)}, got {kind!r}")
        if kind != "fp32" and not torch.amp.is_autocast_available(device.type):
            raise ValueError(f"precision={kind} needs autocast, which {device.type} devices lack; use fp32")
        self.kind, self.device, self.dtype = kind, device, DTYPES[kind]
        if kind == "bf16" and device.type == "cpu" and not _cpu_has_fast_bf16():
            warnings.warn(f"precision=bf16 on this CPU: its bf16 matmuls ran at {cpu_bf16_speedup():.2f}x the fp32 "
                          "rate (no AMX), so steps get slower; bf16 still saves activation memory. precision=fp32 "
                          "is faster on this machine.", stacklevel=2)
        elif kind == "bf16" and device.type == "cuda" and not native_bf16(device):
            warnings.warn("precision=bf16 on a GPU without native bf16 (compute capability < 8.0): it is "
                          "emulated and slow; use precision=fp16 (with loss scaling) or fp32.", stacklevel=2)
        if device.type == "cuda":  # process-wide switches, as torch offers them; tf32=False: exact fp32
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        self.scaler = torch.amp.GradScaler(device.type) if kind == "fp16" else None

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.kind == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer, params, max_grad_norm: float) -> torch.Tensor:
        """Unscale, clip to max_grad_norm (<= 0: no clipping), step. Returns the pre-clip global norm as a
        0-dim tensor on the device, so that the host does not wait for it: read it with float(norm) when it
        is logged. (The fp16 scaler itself reads one flag per step to decide whether to skip the step.)"""
        if self.scaler:
            self.scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm > 0 else math.inf)
        if self.scaler:
            self.scaler.step(optimizer)  # skips the step itself when the scaled grads overflowed
            self.scaler.update()
        else:
            optimizer.step()
        return norm.detach()

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler and state:
            self.scaler.load_state_dict(state)
