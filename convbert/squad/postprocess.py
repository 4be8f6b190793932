"""From per-window start/end logits to one answer text per question (docs/design.md §4).

Per window: the `n_best` highest start and end logits among context tokens form candidate spans
(start <= end, at most `max_answer_length` tokens, start token in its max-context window unless that
window cannot hold the span); a span's score is start + end logit. The best span across a
question's windows wins and is cut out of the original context with the tokens' character offsets.

SQuAD 2.0 no-answer odds (higher = more likely unanswerable), per question:
- "span": min over windows of the [CLS] null score (start[0] + end[0]) minus the best span score;
- "classifier": minus the max over windows of the answerable logit (ELECTRA uses its classifier's
  minimum "impossible" logit the same way).
The question is answered "" when its odds exceed `null_threshold`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .data import SquadExample
from .features import SquadFeatures

NO_SPAN_ODDS = 1e6  # null odds for a question with no valid span at all (JSON has no infinity)


@dataclass
class PostprocessConfig:
    n_best: int = 20
    max_answer_length: int = 30  # tokens
    null_score: str = "classifier"  # "classifier" (needs answerable logits) or "span"
    null_threshold: float = 0.0


@dataclass
class Predictions:
    answers: dict[str, str]  # final predictions (v2: "" where null odds > threshold)
    best_spans: dict[str, str]  # best non-null span per question ("" if no valid span)
    null_odds: dict[str, float] | None  # v2 only
    nbest: dict[str, list[dict]]  # per question: [{"text", "score"}], best first


def _top(logits: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest logits among allowed positions, best first."""
    idx = np.flatnonzero(allowed)
    if len(idx) > k:
        idx = idx[np.argpartition(-logits[idx], k - 1)[:k]]
    return idx[np.argsort(-logits[idx], kind="stable")]


def window_candidates(start_logits: np.ndarray, end_logits: np.ndarray, context_start: int,
                      span_start: int, owner_end: np.ndarray, cfg: PostprocessConfig
                      ) -> list[tuple[float, int, int]]:
    """Up to n_best (score, start, end) spans of one window, in window token positions, best first.

    Starts and ends are the n_best top logits among the window's context tokens. A span is kept when its
    start has max context in this window, or when the window where it does cannot hold the span's end
    (the BERT/ELECTRA rule drops those spans entirely; keeping them only adds otherwise-lost answers).
    """
    length = len(owner_end)
    in_ctx = np.zeros(len(start_logits), dtype=bool)
    in_ctx[context_start:context_start + length] = True
    starts = _top(start_logits, in_ctx, cfg.n_best)  # [k1]
    ends = _top(end_logits, in_ctx, cfg.n_best)  # [k2]
    n_tok = ends[None, :] - starts[:, None] + 1  # [k1, k2]
    ok = (n_tok >= 1) & (n_tok <= cfg.max_answer_length)
    owner = owner_end[starts - context_start][:, None]  # [k1, 1]
    doc_end = span_start + ends[None, :] - context_start  # [1, k2]
    ok &= (owner == span_start + length) | (doc_end >= owner)
    si, ei = np.nonzero(ok)
    scores = start_logits[starts[si]] + end_logits[ends[ei]]
    order = np.argsort(-scores, kind="stable")[:cfg.n_best]
    return [(float(scores[j]), int(starts[si[j]]), int(ends[ei[j]])) for j in order]


def postprocess(examples: Sequence[SquadExample], features: SquadFeatures,
                start_logits: Sequence[np.ndarray], end_logits: Sequence[np.ndarray],
                answerable_logits: Sequence[float] | None, cfg: PostprocessConfig,
                version2: bool) -> Predictions:
    """Logit arrays are per feature (at least the feature's unpadded length)."""
    if cfg.null_score not in ("classifier", "span"):
        raise ValueError(f"null_score must be 'classifier' or 'span', got {cfg.null_score!r}")
    use_classifier = version2 and cfg.null_score == "classifier"
    if use_classifier and answerable_logits is None:
        raise ValueError("null_score='classifier' needs answerable logits (model built with answerable=True)")
    by_example: dict[int, list[int]] = defaultdict(list)
    for f, ex_i in enumerate(features.example_index):
        by_example[ex_i].append(f)

    answers, best_spans, nbest, odds = {}, {}, {}, {}
    for ex_i, ex in enumerate(examples):
        cands: list[tuple[float, str]] = []
        null_span, max_answerable = np.inf, -np.inf
        for f in by_example.get(ex_i, []):
            st, en = np.asarray(start_logits[f]), np.asarray(end_logits[f])
            for score, s, e in window_candidates(st, en, features.context_start[f], features.span_start[f],
                                                 features.owner_end[f], cfg):
                a, b = features.char_span(f, s, e)
                cands.append((score, ex.context[a:b]))
            null_span = min(null_span, float(st[0] + en[0]))
            if answerable_logits is not None:
                max_answerable = max(max_answerable, float(answerable_logits[f]))
        cands.sort(key=lambda c: -c[0])
        seen, top = set(), []
        for score, text in cands:  # distinct texts, best first
            if text not in seen:
                seen.add(text)
                top.append({"text": text, "score": score})
            if len(top) == cfg.n_best:
                break
        nbest[ex.qid] = top
        best = top[0]["text"] if top else ""
        best_spans[ex.qid] = best
        if version2:
            if not top:
                o = NO_SPAN_ODDS
            elif use_classifier:
                o = -max_answerable
            else:
                o = null_span - top[0]["score"]
            odds[ex.qid] = float(o)
            answers[ex.qid] = "" if o > cfg.null_threshold else best
        else:
            answers[ex.qid] = best
    return Predictions(answers, best_spans, odds if version2 else None, nbest)
