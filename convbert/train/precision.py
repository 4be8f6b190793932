"""Mixed precision: autocast context, optional fp16 grad scaler, clipped optimizer step."""

from __future__ import annotations

import contextlib
import math
import warnings

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _cpu_has_fast_bf16() -> bool:
    """AMX tiles are what make CPU bf16 matmuls faster than fp32; without them oneDNN's bf16 path is slower."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private helper, absent in some versions
    return True if probe is None else bool(probe())


class Precision:
    def __init__(self, kind: str, device: torch.device):
        if kind not in DTYPES:
            raise ValueError(f"precision must be one of {sorted(DTYPES)}, got {kind!r}")
        if kind == "fp16" and device.type != "cuda":
            raise ValueError("precision=fp16 needs a CUDA device; use bf16 on CPU")
        self.kind, self.device, self.dtype = kind, device, DTYPES[kind]
        if kind == "bf16" and device.type == "cpu" and not _cpu_has_fast_bf16():
            warnings.warn("precision=bf16 on a CPU without AMX: bf16 matmuls run about half as fast as fp32 here "
                          "(measured on AVX512-BF16), so steps get slower; it still saves activation memory. "
                          "precision=fp32 is faster on this machine.", stacklevel=2)
        self.scaler = torch.amp.GradScaler(device.type) if kind == "fp16" else None

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.kind == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer, params, max_grad_norm: float) -> float:
        """Unscale, clip to max_grad_norm (<= 0: no clipping), step; returns the pre-clip global norm."""
        if self.scaler:
            self.scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm > 0 else math.inf)
        if self.scaler:
            self.scaler.step(optimizer)  # skips the step itself when the scaled grads overflowed
            self.scaler.update()
        else:
            optimizer.step()
        return float(norm)

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler and state:
            self.scaler.load_state_dict(state)
