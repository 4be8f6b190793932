"""Load a GLUE split as a list of examples, from the HF hub (`nyu-mll/glue`) or from a directory in the
original distribution layout. Both sources give the same examples: idx is the row position for
train/dev splits and the file's id column for test splits (what the leaderboard expects); unlabeled
test rows have label None."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convbert.glue.tasks import GlueTask, get_task

log = logging.getLogger(__name__)


class GlueDataError(ValueError):
    """Bad GLUE input: missing file, malformed row, label outside the task's label set."""


@dataclass
class GlueExample:
    idx: int
    text_a: str
    text_b: str | None
    label: int | float | None  # class index, STS-B score, or None (test)


@dataclass
class GlueSplit:
    task: str
    split: str
    examples: list[GlueExample]
    source: str  # file path or "hub:<dataset>/<config>/<split>"
    skipped_lines: list[int] = field(default_factory=list)  # QQP's malformed lines (1-based)

    def __len__(self) -> int:
        return len(self.examples)


def is_test_split(task: GlueTask, split: str) -> bool:
    return split in task.test_splits


def _parse_label(task: GlueTask, raw, where: str) -> int | float:
    """TSV label string or hub label value -> class index / score; anything else is an error."""
    if task.is_regression:
        try:
            score = float(raw)
        except (TypeError, ValueError):
            raise GlueDataError(f"{where}: STS-B score {raw!r} is not a number") from None
        if not (0.0 <= score <= 5.0) or math.isnan(score):
            raise GlueDataError(f"{where}: STS-B score {score} outside [0, 5]")
        return float(np.float32(score))  # the hub stores float32: both sources give the same value
    if isinstance(raw, str):
        if raw in task.file_labels:
            return task.file_labels.index(raw)
        raise GlueDataError(f"{where}: label {raw!r} not in {task.name}'s label set {list(task.file_labels)}")
    if isinstance(raw, (int,)) and not isinstance(raw, bool) and 0 <= raw < task.num_labels:
        return int(raw)
    raise GlueDataError(f"{where}: label {raw!r} outside {task.name}'s labels 0..{task.num_labels - 1}")


def read_tsv(path: Path, names: tuple[str, ...] | None = None, lenient: bool = False):
    """Yield (line_number, {column: value}) from a GLUE TSV, reading with quoting off (text may contain
    quote characters). `names` is given for header-less files. A row whose column count differs from the
    header is an error naming file:line, or (lenient) is reported with values None so the caller can skip
    and count it."""
    with open(path, "rb") as f:  # binary: lines split on LF only (a stray CR inside a text field stays)
        lines = enumerate(f, 1)
        if names is None:
            _, raw = next(lines, (1, b""))
            header = _decode(raw, path, 1).rstrip("\r\n")
            if not header:
                raise GlueDataError(f"{path}: empty file (expected a header line)")
            names = tuple(header.split("\t"))
        for lineno, raw in lines:
            line = _decode(raw, path, lineno).rstrip("\r\n")
            if not line:
                continue
            values = line.split("\t")
            if len(values) != len(names):
                if lenient:
                    yield lineno, None
                    continue
                raise GlueDataError(
                    f"{path}:{lineno}: malformed row, {len(values)} tab-separated fields where the "
                    f"header has {len(names)} ({', '.join(names)})"
                )
            yield lineno, dict(zip(names, values, strict=True))


def _decode(raw: bytes, path: Path, lineno: int) -> str:
    """One line as text. utf-8-sig on line 1: MRPC's train/dev headers start with a byte-order mark (copied
    from the MSR release)."""
    try:
        return raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
    except UnicodeDecodeError as e:
        raise GlueDataError(f"{path}:{lineno}: not UTF-8 text (byte {raw[e.start]:#04x} at column {e.start + 1}); "
                            "GLUE files are UTF-8: convert this one (e.g. with iconv)") from None


def load_dir_split(task: GlueTask | str, split: str, glue_dir: str | Path) -> GlueSplit:
    """One split from an original-layout GLUE directory (docs/design.md §5 quirks handled here)."""
    task = get_task(task) if isinstance(task, str) else task
    glue_dir = Path(glue_dir)
    src = task.source(split)
    path = glue_dir / src.dir_path
    if not glue_dir.is_dir():
        raise GlueDataError(f"GLUE directory {glue_dir} does not exist")
    if not path.parent.is_dir():
        raise GlueDataError(f"{path.parent}: no {task.name} task directory in {glue_dir} "
                            f"(expected the original GLUE layout, e.g. {task.dir_name}/train.tsv)")
    if not path.is_file():
        raise GlueDataError(f"{path}: missing {split!r} split file for GLUE task {task.name}")
    test = is_test_split(task, split)
    names = None if test else task.headerless  # CoLA train/dev have no header; its test file has one
    col_a, col_b = task.dir_columns
    examples: list[GlueExample] = []
    skipped: list[int] = []
    for lineno, row in read_tsv(path, names, lenient=task.skip_malformed):
        where = f"{path}:{lineno}"
        if row is None:
            skipped.append(lineno)
            continue
        try:
            text_a = row[col_a]
            text_b = row[col_b] if col_b else None
            if test:
                idx = int(row[task.dir_id])
                label = None
            else:
                idx = len(examples)
                label = _parse_label(task, row[task.dir_label], where)
        except KeyError as e:
            raise GlueDataError(f"{path}: no column {e.args[0]!r} in the header ({', '.join(row)})") from None
        except (GlueDataError, ValueError) as e:
            if task.skip_malformed:  # QQP: a broken line that still has the right field count
                skipped.append(lineno)
                continue
            raise GlueDataError(str(e) if isinstance(e, GlueDataError) else f"{where}: {e}") from None
        examples.append(GlueExample(idx, text_a, text_b, label))
    if skipped:
        log.warning("%s: skipped %d malformed lines (first: %s)", path, len(skipped), skipped[:5])
    if not examples:
        raise GlueDataError(f"{path}: no examples")
    return GlueSplit(task.name, split, examples, str(path), skipped)


def load_hub_split(
    task: GlueTask | str, split: str, hub_path: str = "nyu-mll/glue", cache_dir: str | None = None
) -> GlueSplit:
    """One split via `datasets.load_dataset(hub_path, config)`; hub_path may be a local copy of the repo."""
    import datasets  # heavy import, only when the hub source is used

    task = get_task(task) if isinstance(task, str) else task
    src = task.source(split)
    try:
        ds = datasets.load_dataset(hub_path, src.hub_config, split=src.hub_split, cache_dir=cache_dir)
    except Exception as e:  # unknown config/split, offline, no such dataset
        where = f"hub:{hub_path}/{src.hub_config}"
        raise GlueDataError(f"{where}: cannot load split {src.hub_split!r} ({type(e).__name__}: {e}); "
                            f"for a local GLUE copy in the original layout pass glue_dir=...") from e
    col_a, col_b = task.hub_columns
    needed = [c for c in (col_a, col_b, "label", "idx") if c]
    missing = [c for c in needed if c not in ds.column_names]
    where = f"hub:{hub_path}/{src.hub_config}/{src.hub_split}"
    if missing:
        raise GlueDataError(f"{where}: missing columns {missing} (has {ds.column_names})")
    cols = ds.select_columns(needed).to_dict()  # {column: python list}
    test = is_test_split(task, split)
    examples = []
    for i in range(len(ds)):
        if test:
            label = None  # hub test labels are -1
        else:
            label = _parse_label(task, cols["label"][i], f"{where} row {i}")
        text_b = cols[col_b][i] if col_b else None
        examples.append(GlueExample(int(cols["idx"][i]), cols[col_a][i], text_b, label))
    return GlueSplit(task.name, split, examples, where)


def load_split(
    task: GlueTask | str,
    split: str,
    glue_dir: str | Path | None = None,
    hub_path: str = "nyu-mll/glue",
    cache_dir: str | None = None,
) -> GlueSplit:
    """Original GLUE directory when `glue_dir` is given, else the hub dataset."""
    if glue_dir:
        return load_dir_split(task, split, glue_dir)
    return load_hub_split(task, split, hub_path, cache_dir)
