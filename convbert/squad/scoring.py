"""SQuAD 1.1 / 2.0 scoring, written from the official rules (docs/design.md §5).

Both versions normalise answers the same way (lowercase, drop ASCII punctuation, drop the articles
a/an/the, collapse whitespace) and take the max over the gold answers. They differ in edge cases:
- v1.1: every question has gold answers; token F1 with no overlap (including empty strings) is 0.
- v2.0: gold answers that normalise to "" are ignored; a question left with none is unanswerable and
  its only gold answer is "". F1 with an empty side is 1 iff both sides are empty.
v2.0 also reports HasAns/NoAns splits (each left out when it has no questions) and the best EM/F1
over a sweep of the no-answer threshold on `null_odds` (higher = more likely unanswerable; predict ""
iff odds > threshold).

Scores are percentages (0-100). A question without a prediction scores 0 and is counted in `missing`.

Command line: python -m convbert.squad.scoring DATA.json PREDS.json [--null-odds ODDS.json] [--threshold T]
The files are checked first (`check_predictions`): an object of question id -> answer text (odds: -> number);
ids that are not questions of DATA.json are counted and named on stderr (and ignored); a file matching none of
them is an error, as is a non-string answer.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import string
import sys
from collections import Counter
from collections.abc import Mapping, Sequence

from convbert.io import read_json

_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lowercase, strip punctuation, drop articles, collapse whitespace (in that order)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str, version: str = "2.0") -> float:
    pred_toks = normalize_answer(prediction).split()
    gold_toks = normalize_answer(gold).split()
    if version != "1.1" and (not pred_toks or not gold_toks):
        return float(pred_toks == gold_toks)  # v2: no-answer agreement
    overlap = sum((Counter(pred_toks) & Counter(gold_toks)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred_toks), overlap / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def _gold_list(answers: Sequence[str], version: str) -> list[str]:
    if version == "1.1":
        return list(answers)
    kept = [a for a in answers if normalize_answer(a)]
    return kept or [""]


def raw_scores(
    gold: Mapping[str, Sequence[str]], preds: Mapping[str, str], version: str
) -> tuple[dict[str, float], dict[str, float], int]:
    """Per-question EM and F1 (0/1 scale) for every gold question, and the number of missing predictions."""
    em, f1, missing = {}, {}, 0
    for qid, answers in gold.items():
        if qid not in preds:
            missing += 1
            em[qid] = f1[qid] = 0.0
            continue
        golds = _gold_list(answers, version)
        if not golds:  # v1.1 question without answers: nothing can match
            em[qid] = f1[qid] = 0.0
            continue
        pred = preds[qid]
        em[qid] = max(exact_match(pred, g) for g in golds)
        f1[qid] = max(token_f1(pred, g, version) for g in golds)
    return em, f1, missing


def _mean_pct(scores: Mapping[str, float], qids: Sequence[str]) -> float:
    return 100.0 * sum(scores[q] for q in qids) / len(qids) if qids else 0.0


def score_squad_v1(gold: Mapping[str, Sequence[str]], preds: Mapping[str, str]) -> dict[str, float]:
    """gold: qid -> answer texts; preds: qid -> text. Returns {exact, f1, total, missing}."""
    em, f1, missing = raw_scores(gold, preds, "1.1")
    qids = list(gold)
    return {"exact": _mean_pct(em, qids), "f1": _mean_pct(f1, qids), "total": len(qids), "missing": missing}


def best_threshold(
    scores: Mapping[str, float],
    preds: Mapping[str, str],
    null_odds: Mapping[str, float],
    has_answer: Mapping[str, bool],
) -> tuple[float, float]:
    """Sweep the no-answer threshold; return (best score in %, threshold achieving it).

    Start with every question predicted unanswerable, then answer questions in increasing order of
    null odds. Answering an answerable question gains its score; answering an unanswerable one loses
    1 unless its prediction is empty. Cuts are only taken between distinct odds, since a threshold
    cannot separate equal odds. When answering nothing is best the threshold is min(odds) - 1.
    """
    if not scores:
        return 0.0, 0.0
    qids = [q for q in scores if q in null_odds and q in preds]  # a question without a prediction stays 0
    current = sum(1.0 for q in scores if not has_answer[q] and q in preds)
    ordered = sorted(qids, key=lambda q: null_odds[q])
    best = current
    best_thresh = (null_odds[ordered[0]] - 1.0) if ordered else 0.0
    for i, q in enumerate(ordered):
        if has_answer[q]:
            current += scores[q]
        elif preds[q]:
            current -= 1.0
        last_of_tie = i + 1 == len(ordered) or null_odds[ordered[i + 1]] != null_odds[q]
        if last_of_tie and current > best:
            best, best_thresh = current, float(null_odds[q])
    return 100.0 * best / len(scores), best_thresh


def score_squad_v2(
    gold: Mapping[str, Sequence[str]],
    preds: Mapping[str, str],
    null_odds: Mapping[str, float] | None = None,
    null_threshold: float | None = None,
) -> dict[str, float]:
    """SQuAD 2.0 metrics.

    preds: qid -> text ("" = no answer). With `null_odds` and `null_threshold`, a question whose odds
    exceed the threshold is treated as predicted "". With `null_odds`, best_exact/best_f1 and their
    thresholds come from sweeping the threshold over `preds` (pass the best non-null span per question
    to sweep over the whole range).
    """
    if null_odds is not None:
        _check_finite(null_odds, "null_odds")
    em_raw, f1_raw, missing = raw_scores(gold, preds, "2.0")
    has_answer = {q: bool(_gold_list(a, "2.0")[0]) for q, a in gold.items()}
    em, f1 = dict(em_raw), dict(f1_raw)
    if null_odds is not None and null_threshold is not None:
        for q in gold:
            if q in preds and q in null_odds and null_odds[q] > null_threshold:
                em[q] = f1[q] = float(not has_answer[q])
    qids = list(gold)
    has = [q for q in qids if has_answer[q]]
    no = [q for q in qids if not has_answer[q]]
    out: dict[str, float] = {"exact": _mean_pct(em, qids), "f1": _mean_pct(f1, qids), "total": len(qids),
                             "missing": missing}
    for prefix, split in (("HasAns", has), ("NoAns", no)):  # a split without questions is left out
        if split:
            out.update({f"{prefix}_exact": _mean_pct(em, split), f"{prefix}_f1": _mean_pct(f1, split),
                        f"{prefix}_total": len(split)})
    if null_odds is not None:
        out["best_exact"], out["best_exact_thresh"] = best_threshold(em_raw, preds, null_odds, has_answer)
        out["best_f1"], out["best_f1_thresh"] = best_threshold(f1_raw, preds, null_odds, has_answer)
    return out


def _check_finite(null_odds: Mapping[str, float], source: str) -> None:
    """NaN or infinite odds cannot be ordered against a threshold: refused, naming an example."""
    bad = [q for q, v in null_odds.items() if not math.isfinite(v)]
    if bad:
        raise ValueError(f"{source}: {len(bad)} no-answer odds are not finite (e.g. id {bad[0]!r}: "
                         f"{null_odds[bad[0]]!r})")


def gold_from_squad_json(data: Mapping) -> tuple[dict[str, list[str]], str]:
    """qid -> gold answer texts from an official-format dict, and its version ("1.1" or "2.0")."""
    version = "2.0" if str(data.get("version", "1.1")).lstrip("v").startswith("2") else "1.1"
    gold = {}
    for article in data["data"]:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                gold[qa["id"]] = [a["text"] for a in qa.get("answers", [])]
    return gold, version


def _examples(ids: Sequence[str], k: int = 3) -> str:
    return ", ".join(repr(q) for q in list(ids)[:k]) + (", ..." if len(ids) > k else "")


def check_predictions(preds: object, gold: Mapping[str, Sequence[str]], source: str, numbers: bool = False
                      ) -> tuple[dict, list[str], list[str]]:
    """Validate a predictions (or, with numbers, null-odds) file's content against the gold questions.

    Returns (the predictions for gold questions, foreign ids, missing ids); raises ValueError naming the file
    for a non-object, a value of the wrong type, or ids that match none of the questions."""
    kind = "numbers" if numbers else "strings"
    if not isinstance(preds, dict):
        what = "no-answer odds (number)" if numbers else "answer text"
        raise ValueError(f"{source}: expected a JSON object of question id -> {what}, got {type(preds).__name__}")

    def wrong(v: object) -> bool:
        return not isinstance(v, int | float) or isinstance(v, bool) if numbers else not isinstance(v, str)

    bad = [q for q, v in preds.items() if wrong(v)]
    if bad:
        v = preds[bad[0]]
        raise ValueError(f"{source}: {len(bad)} value(s) are not {kind} (e.g. id {bad[0]!r}: "
                         f"{type(v).__name__} {v!r})")
    foreign = [q for q in preds if q not in gold]
    if preds and len(foreign) == len(preds) or not preds and gold:
        raise ValueError(f"{source}: none of its {len(preds)} ids are questions of the dataset ({len(gold)} "
                         f"questions, e.g. {_examples(list(gold))}); is it the predictions file of another dataset?")
    if numbers:
        _check_finite(preds, source)
    missing = [q for q in gold if q not in preds]
    return {q: v for q, v in preds.items() if q in gold}, foreign, missing


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description="Score SQuAD predictions (official rules).")
    p.add_argument("data_file")
    p.add_argument("pred_file")
    p.add_argument("--null-odds", help="qid -> no-answer odds (v2.0)")
    p.add_argument("--threshold", type=float, default=None, help="predict '' where odds > threshold")
    args = p.parse_args(argv)
    gold, version = gold_from_squad_json(read_json(args.data_file))
    preds, foreign, missing = check_predictions(read_json(args.pred_file), gold, args.pred_file)
    for what, ids in (("not questions of " + args.data_file, foreign), ("missing (scored 0)", missing)):
        if ids:
            print(f"{args.pred_file}: {len(ids)} id(s) {what}: {_examples(ids)}", file=sys.stderr)
    if args.threshold is not None and not args.null_odds:
        p.error("--threshold needs --null-odds (the odds it is compared with)")
    if version == "1.1":
        if args.null_odds:
            print(f"{args.data_file} is SQuAD 1.1 (every question has an answer): --null-odds is not used",
                  file=sys.stderr)
        out = score_squad_v1(gold, preds)
    else:
        odds = None
        if args.null_odds:
            odds = check_predictions(read_json(args.null_odds), gold, args.null_odds, numbers=True)[0]
        out = score_squad_v2(gold, preds, odds, args.threshold)
    out["foreign"] = len(foreign)
    json.dump({k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in out.items()},
              sys.stdout, indent=2)
    print()
    return out


if __name__ == "__main__":
    try:
        main()
    except (ValueError, OSError) as e:  # a clear one-line message (exit status 1), not a traceback
        sys.exit(f"error: {e}")
