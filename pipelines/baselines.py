"""Reference rows on their own: `python -m pipelines.baselines data.dir=...` / `make baselines`. Config:
conf/baselines.yaml. The score table fits the same rows by itself from its jobs' data settings."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from convbert.report import ReportError, Table, to_markdown
from convbert.report.baselines import DataSpec, baseline_table_rows
from convbert.report.tasks import GLUE_TASKS, order_tasks
from convbert.report.writers import write_outputs
from pipelines import run_hydra

log = logging.getLogger(__name__)


@hydra.main(config_path="../conf", config_name="baselines", version_base="1.3")
def main(cfg: DictConfig) -> None:
    tasks = list(cfg.tasks)
    unknown = [t for t in tasks if t not in GLUE_TASKS]
    if unknown:
        sys.exit(f"baselines: tasks {unknown} are not GLUE tasks ({', '.join(GLUE_TASKS)})")
    spec = DataSpec(**OmegaConf.to_container(cfg.data, resolve=True))
    rows, notes = baseline_table_rows(tasks, spec, cfg.cache_dir)
    if not rows:
        sys.exit("baselines: nothing fitted:\n  " + "\n  ".join(notes))
    table = Table(rows, order_tasks(tasks), notes)
    print(to_markdown(table))
    try:
        files = write_outputs(table, cfg.output_dir, formats=["md", "csv"])
    except ReportError as e:
        sys.exit(f"baselines: {e}")
    log.info("wrote %s", ", ".join(str(p) for p in files.values()))


if __name__ == "__main__":
    run_hydra(main, "baselines")
