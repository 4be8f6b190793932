"""Run provenance and throughput helpers (convbert/train/runinfo.py)."""

import torch

from convbert.train.runinfo import matmul_tflops


def test_measuring_the_matmul_rate_leaves_the_runs_random_stream_alone():
    """Runs measure it at every job start, after a resume has restored the RNG: drawing from the global
    generator would make a resumed run differ from an uninterrupted one."""
    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    rate = matmul_tflops(torch.device("cpu"), torch.float32, n=64, reps=2)
    assert rate > 0 and torch.equal(torch.rand(4), expected)
