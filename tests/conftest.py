"""pytest's hooks and fixtures for the suite: the test environment, torch's thread count restored after each
test, and the order slow tests start in under pytest-xdist. The helpers tests import are in helpers.py."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from helpers import TEST_ENV


def pytest_configure(config: pytest.Config) -> None:
    for key, value in TEST_ENV.items():
        os.environ.setdefault(key, value)
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
        # pytest-xdist workers (make test: -n 2) share the cores: one torch thread each, set before torch is
        # imported. Two threads per worker on 2 cores oversubscribe them: the whole suite runs about 60% slower.
        os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _restore_torch_threads() -> Iterator[None]:
    """In-process runs set torch's process-wide thread count (trainer.threads); a test that
    changed it must not leave the next tests in this worker with another count."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


# The longest test files, as measured on 2 cores. Under pytest-xdist (make test: -n 2, handing out one test at a
# time) the slow tests start first, these files' first of all, so that both workers finish at about the same time
# rather than one starting a minute-long test when the other is nearly done. Only the order changes.
START_FIRST = ("test_reproduce.py", "test_budget.py", "test_finetune_resume.py", "test_finetune_search.py",
               "test_gpu_check.py", "test_pretrain.py", "test_curve.py", "test_finetune_glue.py",
               "test_finetune_squad.py", "test_experiments.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return  # one process: keep pytest's order

    def rank(item: pytest.Item) -> tuple[bool, int]:
        name = item.path.name
        return item.get_closest_marker("slow") is None, START_FIRST.index(name) if name in START_FIRST else 99

    items.sort(key=rank)  # stable: the file order and each file's own order otherwise stay
