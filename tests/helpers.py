"""Shared test plumbing, imported by the test files: one way to run an entry point in-process (Hydra's compose
API) and one to run it as a subprocess (signals, torchrun, the Makefile), and the environment every test runs
in. (conftest.py holds only pytest's hooks and fixtures.)

In-process runs skip what only `@hydra.main` does (writing .hydra/, configuring logging, sweeps); use
`run_process` when a test is about those, or about exit codes and stderr.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
# conf/<stage>.yaml, pipelines/<stage>.py
STAGES = ("prepare", "pretrain", "finetune", "baselines", "table", "reproduce", "curve")

# No network, no wandb account, no thread oversubscription on a shared 2-core machine.
TEST_ENV = {
    "WANDB_MODE": "disabled",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


@contextlib.contextmanager
def hydra_job(stage: str, overrides: Sequence[str] = (), run_dir: str | Path | None = None) -> Iterator[Any]:
    """The job config `python -m pipelines.<stage> <overrides>` would get, composed from conf/ by Hydra.

    While the block runs, HydraConfig is set as in a real job (so `${hydra:runtime.cwd}` resolves and
    `HydraConfig.get().runtime.output_dir` is `run_dir`); it is cleared afterwards."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict

    import pipelines  # noqa: F401  (registers conf/'s resolvers, as every entry point does)

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3", job_name=stage):
        cfg = compose(stage, overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir if run_dir is not None else Path.cwd())
        cfg.hydra.mode = RunMode.RUN
    HydraConfig.instance().set_config(cfg)
    try:
        with open_dict(cfg):
            del cfg["hydra"]  # as in a Hydra job: the task sees its own keys only
        yield cfg
    finally:
        HydraConfig.instance().cfg = None


def compose_resolved(stage: str, overrides: Sequence[str] = (), run_dir: str | Path | None = None) -> dict:
    """The stage's config as a plain dict with every interpolation resolved (what the library receives)."""
    from omegaconf import OmegaConf

    with hydra_job(stage, overrides, run_dir) as cfg:
        return OmegaConf.to_container(cfg, resolve=True)


def run_entry(stage: str, *overrides: str, run_dir: str | Path) -> Any:
    """Run pipelines/<stage>.py's main in this process on the composed config; returns what it returns.
    Exceptions propagate (a subprocess would exit non-zero)."""
    module = importlib.import_module(f"pipelines.{stage}")
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    with hydra_job(stage, overrides, run_dir) as cfg:
        return module.main.__wrapped__(cfg)  # the function under @hydra.main


def process_command(args: Sequence[str]) -> list[str]:
    """A leading "-m" or "-c" means this interpreter: `python -m ...` / `python -c ...`."""
    return [sys.executable, *args] if args and args[0] in ("-m", "-c") else list(args)


def process_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a test's subprocess: TEST_ENV, one OpenMP thread, this checkout first on
    PYTHONPATH, then `env`."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, **TEST_ENV, "OMP_NUM_THREADS": "1", "PYTHONPATH": path, **(env or {})}


def run_process(args: Sequence[str], *, timeout: float = 600, env: dict[str, str] | None = None,
                cwd: str | Path = REPO) -> subprocess.CompletedProcess:
    """Run a command in its own process to the end (output captured as text); see process_command."""
    return subprocess.run(process_command(args), cwd=cwd, env=process_env(env), capture_output=True, text=True,
                          timeout=timeout)


def start_process(args: Sequence[str], *, stdout: int | None = subprocess.DEVNULL,
                  stderr: int | None = subprocess.PIPE) -> subprocess.Popen:
    """run_process's command and environment, started and left running: for tests that signal or kill it.
    stderr is a text pipe by default, for `communicate()` after the signal."""
    return subprocess.Popen(process_command(args), cwd=REPO, env=process_env(), stdout=stdout, stderr=stderr,
                            text=True)


def torchrun(nproc: int) -> list[str]:
    """Prefix for `run_process` that starts nproc local workers: run_process([*torchrun(2), "-m", "x"])."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]


def spawn_ranks(worker: Any, world: int, *args: Any) -> None:
    """worker(rank, world, port, *args) in `world` processes (torch.multiprocessing), on a free local port."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(worker, args=(world, port, *args), nprocs=world)
