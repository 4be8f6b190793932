"""Score table: `python -m pipelines.table` (make table). Config: conf/table.yaml."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from convbert.report import ReportError, Table, aggregate, collect, compare, load_references, to_markdown
from convbert.report.baselines import baseline_rows
from convbert.report.compare import Comparison
from convbert.report.tasks import GLUE_TASKS
from convbert.report.tracking import log_to_wandb
from convbert.report.writers import write_outputs
from pipelines import run_hydra

log = logging.getLogger(__name__)


def _pair(cfg: DictConfig, table: Table) -> tuple[str, str] | None:
    """The two labels to compare: given explicitly, or auto when the table has exactly two models."""
    if cfg.compare is None:
        return None
    if cfg.compare == "auto":
        models = [r.label for r in table.models]
        return (models[0], models[1]) if len(models) == 2 else None
    pair = list(cfg.compare)
    if len(pair) != 2:
        raise ReportError(f"compare must be two model labels, 'auto' or null; got {pair}")
    return pair[0], pair[1]


def build(cfg: DictConfig) -> tuple[Table, Comparison | None]:
    dirs = [cfg.runs_dir, *cfg.extra_dirs]
    results = collect(dirs, on_error=cfg.on_error)
    refs = load_references(cfg.reference_file) if cfg.references else []
    seeds = list(cfg.seeds) if cfg.seeds is not None else None
    tasks = list(cfg.tasks) if cfg.tasks is not None else None
    fitted, notes = [], []
    if cfg.baselines.enabled:  # majority class and bag of words on the jobs' own data
        fitted, notes = baseline_rows(results, tuple(tasks or GLUE_TASKS), cfg.baselines.cache_dir)
    table = aggregate(results, seeds=seeds, tasks=tasks, duplicates=cfg.duplicates, references=fitted + refs)
    table.notes += notes
    pair = _pair(cfg, table)
    b = cfg.bootstrap
    if pair is None:
        return table, None
    return table, compare(table, *pair, n_boot=b.samples, confidence=b.confidence, seed=b.seed)


def run(cfg: DictConfig) -> dict[str, Path]:
    table, comparison = build(cfg)
    md = to_markdown(table, comparison)
    print(md)
    files = write_outputs(table, cfg.output_dir, comparison, formats=list(cfg.formats))
    t = cfg.tracking
    where = log_to_wandb(table, comparison, files, mode=t.mode, project=t.project, group=t.get("group"),
                         name=t.get("name"), tags=list(t.get("tags") or []), dir=cfg.output_dir)
    if where:
        log.info("logged to wandb: %s", where)
    log.info("wrote %s", ", ".join(str(p) for p in files.values()))
    return files


@hydra.main(config_path="../conf", config_name="table", version_base="1.3")
def main(cfg: DictConfig) -> None:
    log.debug("config:\n%s", OmegaConf.to_yaml(cfg))
    try:
        run(cfg)
    except ReportError as e:
        sys.exit(f"table: {e}")  # a clear one-line message, not a traceback


if __name__ == "__main__":
    run_hydra(main, "table")
