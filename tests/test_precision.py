"""Mixed-precision helper: argument checks and the bf16-on-CPU speed warning."""

import warnings

import pytest
import torch

from convbert.train import Precision


def test_unknown_precision_and_cpu_fp16_are_refused():
    with pytest.raises(ValueError, match="precision must be one of"):
        Precision("fp8", torch.device("cpu"))
    with pytest.raises(ValueError, match="needs a CUDA device"):
        Precision("fp16", torch.device("cpu"))


def test_bf16_on_a_cpu_without_amx_warns_that_fp32_is_faster():
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: True)()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Precision("bf16", torch.device("cpu"))
        Precision("fp32", torch.device("cpu"))
    messages = [str(w.message) for w in caught]
    if amx:
        assert messages == []
    else:
        assert len(messages) == 1 and "precision=fp32 is faster" in messages[0]
