"""Which processes form a job: torchrun's variables, an srun step's, or neither (a plain process)."""

from __future__ import annotations

import os

import pytest

from convbert.train.dist import first_host, init_distributed, launch_env

LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def setenv(monkeypatch):
    for k in list(os.environ):
        if k.startswith("SLURM_") or k in LAUNCH_VARS:
            monkeypatch.delenv(k)
    for k in ("MASTER_ADDR", "MASTER_PORT"):  # absent again after the test, whatever the code under test set
        monkeypatch.setenv(k, "")
        monkeypatch.delenv(k)
    return lambda **kv: [monkeypatch.setenv(k, str(v)) for k, v in kv.items()]


SRUN_STEP = dict(SLURM_JOB_ID=777, SLURM_NTASKS=4, SLURM_STEP_NUM_TASKS=4, SLURM_PROCID=2, SLURM_LOCALID=0,
                 SLURM_STEP_NODELIST="node[01-03,07]", SLURM_JOB_NODELIST="node[01-03,07]")


@pytest.mark.parametrize("env, expected", [
    ({}, (0, 1, 0)),
    (dict(RANK=1, WORLD_SIZE=2, LOCAL_RANK=1), (1, 2, 1)),  # torchrun
    (SRUN_STEP, (2, 4, 0)),  # srun -n4
    ({**SRUN_STEP, "RANK": 0, "WORLD_SIZE": 1, "LOCAL_RANK": 0}, (0, 1, 0)),  # torchrun (1 process) in a step
    # the batch script of sbatch -n8 is one process, though it carries the allocation's task count
    (dict(SLURM_JOB_ID=777, SLURM_NTASKS=8, SLURM_PROCID=0, SLURM_LOCALID=0, SLURM_JOB_NODELIST="n[1-2]"),
     (0, 1, 0)),
])
def test_launch_env(setenv, env, expected):
    setenv(**env)
    assert launch_env() == expected


def test_srun_step_rendezvous_on_its_first_host(setenv):
    setenv(**SRUN_STEP)
    launch_env()
    assert os.environ["MASTER_ADDR"] == "node01" and os.environ["MASTER_PORT"] == "20777"


def test_single_process_in_an_allocation_does_not_wait_for_other_ranks(setenv):
    setenv(SLURM_JOB_ID=777, SLURM_NTASKS=8, SLURM_PROCID=0, SLURM_LOCALID=0)
    info = init_distributed("cpu")  # would block in init_process_group if it took the allocation's 8 tasks
    assert (info.rank, info.world_size, info.distributed) == (0, 1, False)


@pytest.mark.parametrize("nodes, host", [
    ("node[01-03,07]", "node01"), ("gpu[1-2],cpu3", "gpu1"), ("single", "single"), ("a1,b2", "a1"),
    ("rack[3-4]-n[07,09]", "rack3-n07"), ("node[5]", "node5"),
])
def test_first_host(nodes, host):
    assert first_host(nodes) == host
