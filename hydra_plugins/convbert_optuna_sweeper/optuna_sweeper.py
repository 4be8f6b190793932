"""Hyper-parameter search as a Hydra sweep, on current Optuna: `-m hparams_search=glue_lr` (conf/hparams_search).

Why not hydra-optuna-sweeper: its last release (1.3.0) pins optuna<3, i.e. Optuna 2.10 (2021), whose SQLite
storage fails against SQLAlchemy 2 (what pip installs beside it today: the study cannot even be created) and
would need SQLAlchemy<2 and an alembic of that era pinned into our environment. This sweeper keeps its config
shape (direction, n_trials, n_jobs, storage, study_name, sampler seed, `params` in Hydra's override grammar:
`interval(a, b)`, `tag(log, interval(a, b))`, `tag(int, interval(a, b))`, `choice(...)`, `range(...)`).

- Search dimensions: `params` from the config plus sweep overrides on the command line (`optim.lr=choice(...)`);
  plain overrides are fixed in every trial.
- Trial n is Hydra job n, so its job dir is the same when a search continues.
- The study lives in <sweep dir>/optuna.db (unless storage is set): rerunning the command with the same
  hydra.sweep.dir continues it. Trials left running by an interrupted search are launched again with their
  parameters (their jobs resume from their checkpoints and reuse finished seeds), then new trials are asked until
  n_trials have completed (trials that failed are replaced, so rerunning after fixing their cause completes the
  search). A continued study must keep its search space and fixed settings; a second search on the same dir is
  refused while the first runs.
- After every trial, <sweep dir>/search_summary.json: every trial (number, state, value, params, job dir) and
  the best one. A trial whose job fails, or returns no finite value, is marked failed.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from convbert.io import write_json_atomic
from convbert.train.lock import DirLock

log = logging.getLogger(__name__)


def distribution(override: Override) -> optuna.distributions.BaseDistribution:
    """An Optuna distribution from a Hydra sweep override."""
    sweep = override.value()
    if isinstance(sweep, ChoiceSweep):
        return optuna.distributions.CategoricalDistribution(list(sweep.list))
    if isinstance(sweep, RangeSweep):
        return optuna.distributions.CategoricalDistribution(list(range(int(sweep.start), int(sweep.stop),
                                                                       int(sweep.step))))
    if isinstance(sweep, IntervalSweep):
        log_scale = "log" in sweep.tags
        if "int" in sweep.tags:
            return optuna.distributions.IntDistribution(int(sweep.start), int(sweep.end), log=log_scale)
        return optuna.distributions.FloatDistribution(float(sweep.start), float(sweep.end), log=log_scale)
    raise ValueError(f"{override.input_line}: not a search dimension (choice, range or interval)")


def _check_same_search(study: optuna.Study, dims: dict[str, optuna.distributions.BaseDistribution],
                       fixed: list[str], storage: str) -> None:
    """A continued study keeps its search space and fixed settings (its trials are compared as one search);
    a new study records them."""
    space = {k: repr(d) for k, d in dims.items()}
    fixed = [o for o in fixed if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]  # where and how it runs
    recorded = study.user_attrs
    if "space" not in recorded:
        study.set_user_attr("space", space)
        study.set_user_attr("fixed", fixed)
        return
    changes = [f"{k}: {recorded['space'].get(k, 'not searched')} -> {space.get(k, 'not searched')}"
               for k in sorted(set(recorded["space"]) | set(space)) if recorded["space"].get(k) != space.get(k)]
    old, new = set(recorded["fixed"]), set(fixed)
    changes += [f"fixed {o} -> dropped" for o in sorted(old - new)] + [f"fixed {o} -> added" for o in sorted(new - old)]
    if changes:
        raise ValueError(f"{storage} holds a search with other settings ({'; '.join(changes)}); continue it with "
                         "its own, or start another search (a new hydra.sweep.dir)")


def _flatten(params: Any, prefix: str = "") -> dict[str, str]:
    """{'optim': {'lr': 'interval(..)'}} or {'optim.lr': ...} -> {'optim.lr': 'interval(..)'}."""
    out: dict[str, str] = {}
    for k, v in (params or {}).items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = str(v)
    return out


class OptunaSweeper(Sweeper):
    def __init__(self, direction: str = "maximize", n_trials: int = 20, n_jobs: int = 1, storage: str | None = None,
                 study_name: str | None = None, seed: int = 0, params: Any = None) -> None:
        if direction not in ("maximize", "minimize"):
            raise ValueError(f"hydra.sweeper.direction must be maximize or minimize, got {direction!r}")
        if n_trials < 1 or n_jobs < 1:
            raise ValueError(f"hydra.sweeper.n_trials and n_jobs must be >= 1, got {n_trials} and {n_jobs}")
        self.direction, self.n_trials, self.n_jobs = direction, n_trials, n_jobs
        self.storage, self.study_name, self.seed = storage, study_name, seed
        self.params = _flatten(OmegaConf.to_container(params, resolve=True) if isinstance(params, DictConfig)
                               else params)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    def _space(self, arguments: list[str]) -> tuple[dict[str, optuna.distributions.BaseDistribution], list[str]]:
        parser = OverridesParser.create()
        dims = {o.get_key_element(): distribution(o)
                for o in parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()])}
        fixed = []
        for o in parser.parse_overrides(arguments):
            if o.is_sweep_override():
                dims[o.get_key_element()] = distribution(o)
            else:
                fixed.append(o.input_line)
                dims.pop(o.get_key_element(), None)  # fixed on the command line: not searched
        if not dims:
            raise ValueError("hyper-parameter search without search dimensions: set hydra.sweeper.params")
        return dims, fixed

    def sweep(self, arguments: list[str]) -> None:
        sweep_dir = Path(self.config.hydra.sweep.dir).resolve()
        with DirLock(sweep_dir, "hyper-parameter search"):  # a second search here would relaunch our trials
            self._sweep(arguments, sweep_dir)

    def _sweep(self, arguments: list[str], sweep_dir: Path) -> None:
        dims, fixed = self._space(arguments)
        storage = self.storage or f"sqlite:///{sweep_dir / 'optuna.db'}"
        study = optuna.create_study(study_name=self.study_name or sweep_dir.name, storage=storage,
                                    direction=self.direction, load_if_exists=True,
                                    sampler=optuna.samplers.TPESampler(seed=self.seed))
        _check_same_search(study, dims, fixed, storage)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        T = optuna.trial.TrialState
        interrupted = [t for t in study.get_trials(deepcopy=False) if t.state in (T.RUNNING, T.WAITING)]
        if interrupted:
            log.info("continuing %s: relaunching interrupted trial(s) %s", storage, [t.number for t in interrupted])
            for t in interrupted:
                self._run(study, [t], dims, fixed, sweep_dir)
        # n_trials trials must complete; failed ones (a rerun after fixing their cause) are replaced by new
        # trials, in at most n_trials rounds per invocation
        for _ in range(self.n_trials):
            complete = sum(t.state == T.COMPLETE for t in study.get_trials(deepcopy=False))
            if complete >= self.n_trials:
                break
            self._run(study, [study.ask(dims) for _ in range(min(self.n_jobs, self.n_trials - complete))], dims,
                      fixed, sweep_dir)
        complete = sum(t.state == T.COMPLETE for t in study.get_trials(deepcopy=False))
        if complete == 0:
            raise RuntimeError(f"no trial of the search in {sweep_dir} completed (see search_summary.json and the "
                               "trials' failed.json); fix the cause and rerun the same command to try again")
        if complete < self.n_trials:
            log.warning("%d of %d trials completed; rerun the same command to replace the failed ones", complete,
                        self.n_trials)
        log.info("search done: %s", sweep_dir / "search_summary.json")

    def _run(self, study: optuna.Study, trials: list, dims: dict, fixed: list[str], sweep_dir: Path) -> None:
        overrides = [fixed + [f"{k}={t.params[k]}" for k in dims] for t in trials]
        # trials of one batch have consecutive numbers (one process asks); job n = trial n keeps job dirs stable
        returns = self.launcher.launch(overrides, initial_job_idx=trials[0].number)
        for t, ret in zip(trials, returns, strict=True):
            job_dir = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir") if ret.hydra_cfg else None
            study._storage.set_trial_user_attr(t._trial_id, "job_dir", job_dir)
            value = ret.return_value if ret.status == JobStatus.COMPLETED else None
            if value is None or not math.isfinite(float(value)):
                log.warning("trial %d failed (%s)", t.number, ret._return_value if ret.status != JobStatus.COMPLETED
                            else f"objective {value}")
                study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(t.number, float(value))
            self._summary(study, sweep_dir, dims)

    def _summary(self, study: optuna.Study, sweep_dir: Path, dims: dict) -> None:
        trials = [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
                   "job_dir": t.user_attrs.get("job_dir")} for t in study.get_trials(deepcopy=False)]
        complete = [t for t in trials if t["state"] == "COMPLETE"]
        best = (max if self.direction == "maximize" else min)(complete, key=lambda t: t["value"]) if complete else None
        summary = {"study": study.study_name, "direction": self.direction, "n_trials": self.n_trials,
                   "finished": sum(t["state"] in ("COMPLETE", "FAIL") for t in trials),
                   "space": {k: repr(d) for k, d in dims.items()}, "best": best, "trials": trials,
                   "note": "hyper-parameters chosen on the dev set: the best dev score is optimistic"}
        write_json_atomic(sweep_dir / "search_summary.json", summary)
