"""Load SQuAD 1.1 / 2.0 examples from the official JSON files or the HF hub (docs/design.md §5).

Sources:
- official JSON: a file (`dev-v1.1.json`, ...) or a directory holding the official file names;
  `data -> paragraphs -> qas`, v2.0 questions carry `is_impossible` and empty `answers`.
- hub: `rajpurkar/squad` / `rajpurkar/squad_v2` (or any `datasets.load_dataset` path with the same
  flat columns id, title, context, question, answers{text, answer_start}).

Answers whose `answer_start` does not point at their text are repaired when the text occurs in the
context (the occurrence nearest to the given start) and otherwise kept for scoring only
(start = -1). Both cases are counted in the `LoadReport`, never fatal.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

OFFICIAL_FILES = {
    ("1.1", "train"): "train-v1.1.json",
    ("1.1", "validation"): "dev-v1.1.json",
    ("2.0", "train"): "train-v2.0.json",
    ("2.0", "validation"): "dev-v2.0.json",
}
HUB_NAMES = {"1.1": "rajpurkar/squad", "2.0": "rajpurkar/squad_v2"}
_SPLIT_ALIASES = {"dev": "validation", "validation": "validation", "train": "train"}


@dataclass
class Answer:
    text: str
    start: int  # character offset into the context; -1 if the text could not be located


@dataclass
class SquadExample:
    qid: str
    question: str
    context: str
    answers: list[Answer]  # all gold answers; empty for unanswerable (v2.0) questions
    title: str = ""

    @property
    def is_impossible(self) -> bool:
        return not self.answers


@dataclass
class LoadReport:
    source: str
    examples: int = 0
    unanswerable: int = 0
    fixed_starts: int = 0  # answer_start off, text found elsewhere in the context -> corrected
    unmatched_answers: int = 0  # text not in the context at all -> kept for scoring only
    bad_ids: list[str] = field(default_factory=list)  # first few question ids with either problem

    def summary(self) -> str:
        s = f"{self.source}: {self.examples} questions ({self.unanswerable} unanswerable)"
        if self.fixed_starts or self.unmatched_answers:
            s += (f"; answer_start mismatches: {self.fixed_starts} repaired, {self.unmatched_answers} "
                  f"not found in context (e.g. ids {', '.join(self.bad_ids)})")
        return s


def _locate(context: str, text: str, start: int) -> int | None:
    """Character start of `text` in `context`: `start` if it matches, else the nearest occurrence."""
    if 0 <= start and context[start:start + len(text)] == text:
        return start
    hits, i = [], context.find(text)
    while i != -1 and text:
        hits.append(i)
        i = context.find(text, i + 1)
    return min(hits, key=lambda h: abs(h - start)) if hits else None


def _make_answers(context: str, texts: list, starts: list, report: LoadReport, qid: str) -> list[Answer]:
    answers = []
    for text, start in zip(texts, starts, strict=True):
        found = _locate(context, text, int(start))
        if found is None or found != int(start):
            if found is None:
                report.unmatched_answers += 1
            else:
                report.fixed_starts += 1
            if len(report.bad_ids) < 5 and qid not in report.bad_ids:
                report.bad_ids.append(qid)
        answers.append(Answer(text, -1 if found is None else found))
    return answers


def _need(obj: object, key: str, where: str, path: Path, kind: type | tuple[type, ...]) -> object:
    if not isinstance(obj, Mapping) or key not in obj:
        raise ValueError(f"{path}: {where}: missing key {key!r}")
    value = obj[key]
    if not isinstance(value, kind):
        names = "/".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise ValueError(f"{path}: {where}.{key}: expected {names}, got {type(value).__name__}")
    return value


def parse_squad_json(data: Mapping, path: Path | str = "<json>") -> tuple[list[SquadExample], LoadReport]:
    """Examples from an already-parsed official-format dict (structure errors name path and location)."""
    path = Path(path)
    report = LoadReport(str(path))
    examples: list[SquadExample] = []
    for i, article in enumerate(_need(data, "data", "top level", path, list)):
        title = article.get("title", "") if isinstance(article, Mapping) else ""
        for j, para in enumerate(_need(article, "paragraphs", f"data[{i}]", path, list)):
            where = f"data[{i}].paragraphs[{j}]"
            context = _need(para, "context", where, path, str)
            for k, qa in enumerate(_need(para, "qas", where, path, list)):
                w = f"{where}.qas[{k}]"
                qid = str(_need(qa, "id", w, path, (str, int)))
                question = _need(qa, "question", w, path, str)
                raw = [] if qa.get("is_impossible", False) else _need(qa, "answers", w, path, list)
                for m, a in enumerate(raw):
                    _need(a, "text", f"{w}.answers[{m}]", path, str)
                    _need(a, "answer_start", f"{w}.answers[{m}]", path, int)
                answers = _make_answers(context, [a["text"] for a in raw],
                                        [a["answer_start"] for a in raw], report, qid)
                examples.append(SquadExample(qid, question, context, answers, title))
    return _finish(examples, report)


def load_squad_json(path: str | Path) -> tuple[list[SquadExample], LoadReport]:
    """Examples from an official SQuAD JSON file. Malformed files raise ValueError naming file and spot."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"SQuAD file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return parse_squad_json(data, path)


def examples_from_records(records: Iterable[Mapping], source: str) -> tuple[list[SquadExample], LoadReport]:
    """Examples from hub-style flat records (id, title, context, question, answers{text, answer_start})."""
    report = LoadReport(source)
    examples = []
    for n, r in enumerate(records):
        try:
            qid, context, question, ans = str(r["id"]), r["context"], r["question"], r["answers"]
            texts, starts = list(ans["text"]), list(ans["answer_start"])
        except (KeyError, TypeError) as e:
            raise ValueError(f"{source}: row {n}: missing or malformed column {e}") from None
        if len(texts) != len(starts):
            raise ValueError(f"{source}: row {n} (id {qid}): {len(texts)} answer texts but "
                             f"{len(starts)} answer_start values")
        answers = _make_answers(context, texts, starts, report, qid)
        examples.append(SquadExample(qid, question, context, answers, r.get("title", "") or ""))
    return _finish(examples, report)


def _finish(examples: list[SquadExample], report: LoadReport) -> tuple[list[SquadExample], LoadReport]:
    seen: set[str] = set()
    for ex in examples:
        if ex.qid in seen:
            raise ValueError(f"{report.source}: duplicate question id {ex.qid!r}")
        seen.add(ex.qid)
    report.examples = len(examples)
    report.unanswerable = sum(ex.is_impossible for ex in examples)
    log.info(report.summary())
    return examples, report


def load_squad_hub(name: str, split: str, **load_kwargs) -> tuple[list[SquadExample], LoadReport]:
    """Examples through `datasets.load_dataset(name, split=...)` (a hub name or a local data dir)."""
    import datasets  # lazy: heavy import

    split = _SPLIT_ALIASES.get(split, split)
    ds = datasets.load_dataset(name, split=split, **load_kwargs)
    return examples_from_records(ds, f"{name}[{split}]")


def load_squad(version: str, split: str, source: str | Path | None = None,
               **load_kwargs) -> tuple[list[SquadExample], LoadReport]:
    """Load a split of SQuAD `version` ("1.1" or "2.0").

    source: None -> the hub dataset for the version; a .json file -> that file; a directory holding the
    official file names -> the file for (version, split); anything else -> `datasets.load_dataset(source)`.
    """
    if version not in HUB_NAMES:
        raise ValueError(f"unknown SQuAD version {version!r}; expected '1.1' or '2.0'")
    split = _SPLIT_ALIASES.get(split, split)
    if source is None:
        return load_squad_hub(HUB_NAMES[version], split, **load_kwargs)
    p = Path(source)
    if p.suffix == ".json":
        return load_squad_json(p)
    if p.is_dir() and (version, split) in OFFICIAL_FILES:
        wanted = p / OFFICIAL_FILES[version, split]
        if wanted.exists():
            return load_squad_json(wanted)
        official = sorted(f for f in set(OFFICIAL_FILES.values()) if (p / f).exists())
        if official:  # a directory of official files that lacks this one: not a datasets repo either
            raise FileNotFoundError(f"{wanted} not found (SQuAD {version} {split}); {p} holds {', '.join(official)}")
    return load_squad_hub(str(source), split, **load_kwargs)


def gold_answers(examples: Iterable[SquadExample]) -> dict[str, list[str]]:
    """qid -> gold answer texts, the input `convbert.squad.scoring` expects."""
    return {ex.qid: [a.text for a in ex.answers] for ex in examples}
