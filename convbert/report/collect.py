"""Find and load the results.json files that fine-tuning jobs leave in their run dirs."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from convbert.io import read_json
from convbert.report.schema import ReportError, Result, parse_result

log = logging.getLogger(__name__)

RESULTS_NAME = "results.json"
FAILED_NAME = "failed.json"  # written by a fine-tuning job that raised
# folders that never hold fine-tuning results but can be large
_SKIP_DIRS = frozenset({"wandb", ".hydra", "__pycache__", ".git"})


def find_results(dirs: Iterable[str | Path]) -> list[Path]:
    """Every results.json under the given dirs (sorted, de-duplicated); a missing dir is an error."""
    return _find(dirs)[RESULTS_NAME]


def _find(dirs: Iterable[str | Path]) -> dict[str, list[Path]]:
    """results.json and failed.json files under dirs, in one walk: {name: sorted, de-duplicated paths}."""
    found: dict[str, set[Path]] = {RESULTS_NAME: set(), FAILED_NAME: set()}
    for d in dirs:
        root = Path(d)
        if not root.is_dir():
            raise ReportError(f"results dir {str(root)!r} does not exist or is not a directory")
        for here, subdirs, files in os.walk(root):
            subdirs[:] = [s for s in subdirs if s not in _SKIP_DIRS]
            for name, paths in found.items():
                if name in files:
                    paths.add(_resolved(Path(here) / name))
    return {name: sorted(paths) for name, paths in found.items()}


def _resolved(path: Path) -> Path:
    """The real path (one entry per file reached through symlinked dirs); a broken or looping link stays as
    it is, to be reported as unreadable with the other bad files."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop, before Python 3.13
        return path


def _error_of(failed: Path) -> str:
    try:
        return str(json.loads(failed.read_text(encoding="utf-8")).get("error", "no error recorded"))
    except (OSError, ValueError, AttributeError):
        return "unreadable failed.json"


def load_result(path: str | Path) -> Result:
    """Read and validate one results.json; ReportError names the file and the problem."""
    path = Path(path)
    obj = read_json(path, ReportError)
    return parse_result(obj, source=str(path), mtime=path.stat().st_mtime)


def scan(dirs: Iterable[str | Path]) -> tuple[list[Result], list[str], list[Path]]:
    """Load every results.json under dirs; return (valid results, one message per bad file, the failed.json
    of jobs that left no results)."""
    dirs = list(dirs)
    found = _find(dirs)
    paths = found[RESULTS_NAME]
    if not paths:
        raise ReportError(f"no {RESULTS_NAME} found under {', '.join(map(str, dirs)) or '(no dirs given)'}; "
                          "run fine-tuning first (make glue / make squad) or point runs_dir at its outputs")
    results, problems = [], []
    for p in paths:
        failed = p.with_name(FAILED_NAME)
        if failed.exists() and failed.stat().st_mtime >= p.stat().st_mtime:
            problems.append(f"{p}: stale, the job run in that dir since failed ({failed})")
            continue
        try:
            results.append(load_result(p))
        except ReportError as e:
            problems.append(str(e))
    failed_jobs = [f for f in found[FAILED_NAME] if not f.with_name(RESULTS_NAME).exists()]
    return results, problems, failed_jobs


def collect(dirs: Iterable[str | Path], on_error: str = "warn") -> list[Result]:
    """All valid results under dirs. on_error: 'warn' skips a malformed file with a warning, 'raise' stops."""
    if on_error not in ("warn", "raise"):
        raise ReportError(f"on_error must be 'warn' or 'raise', got {on_error!r}")
    results, problems, failed_jobs = scan(dirs)
    if problems and on_error == "raise":
        raise ReportError(problems[0] if len(problems) == 1 else
                          f"{len(problems)} malformed results files:\n  " + "\n  ".join(problems))
    for msg in problems:
        log.warning("skipping %s", msg)
    for failed in failed_jobs:
        log.warning("failed job, shown as missing: %s (%s)", failed.parent, _error_of(failed))
    if not results:
        raise ReportError(f"all {len(problems)} {RESULTS_NAME} files were malformed; nothing to tabulate")
    return results
