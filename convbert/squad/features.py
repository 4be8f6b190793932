"""Question + context windows for span extraction (docs/design.md §4).

Each example becomes one or more features `[CLS] question [SEP] context-window [SEP]` (token types
0 then 1). The question is cut to `max_query_length` tokens. Context windows hold up to
`max_seq_length - len(question) - 3` tokens and `doc_stride` is the distance between consecutive
window starts (the BERT/ELECTRA convention, not HF's overlap `stride`); the last window ends at the
end of the context. Context tokens keep their character offsets into the original context, so a
predicted token span maps straight back to the context text.

Training labels: the token span of the first locatable gold answer when it lies inside the window,
otherwise (answer outside this window, or unanswerable question) start = end = 0, i.e. [CLS].
`answerable` is the question-level label for the SQuAD 2.0 classifier (1 = has an answer).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from tokenizers import Tokenizer

from .data import SquadExample

log = logging.getLogger(__name__)


@dataclass
class FeatureConfig:
    max_seq_length: int = 512
    max_query_length: int = 64
    doc_stride: int = 128  # distance between window starts, in tokens

    def __post_init__(self) -> None:
        if self.doc_stride < 1:
            raise ValueError(f"doc_stride must be >= 1, got {self.doc_stride}")
        if self.max_seq_length - self.max_query_length - 3 < 1:
            raise ValueError(f"max_seq_length={self.max_seq_length} leaves no room for context after a "
                             f"{self.max_query_length}-token question and 3 special tokens")


@dataclass
class FeatureReport:
    examples: int = 0
    features: int = 0
    long_contexts: int = 0  # examples whose context needed more than one window
    truncated_questions: int = 0
    answers_not_tokenizable: int = 0  # answer maps to no context token (e.g. whitespace-only)
    answers_outside_all_windows: int = 0  # answer longer than any window can hold (training)
    skipped_examples: int = 0  # answerable training examples without a locatable answer

    def summary(self) -> str:
        return (f"{self.examples} questions -> {self.features} windows; {self.long_contexts} contexts longer "
                f"than one window; {self.truncated_questions} questions truncated; "
                f"{self.answers_not_tokenizable} answers without tokens; {self.answers_outside_all_windows} "
                f"answers fit no window; {self.skipped_examples} training questions skipped")


@dataclass
class SquadFeatures:
    """Column store of windows. Token arrays are unpadded (dynamic padding happens in the collator)."""

    input_ids: list[np.ndarray] = field(default_factory=list)  # [T_i] int64
    context_start: list[int] = field(default_factory=list)  # index of the first context token
    span_start: list[int] = field(default_factory=list)  # doc index of the window's first context token
    span_length: list[int] = field(default_factory=list)
    # [span_length] int: doc end (exclusive) of the window where each token has max context
    owner_end: list[np.ndarray] = field(default_factory=list)
    example_index: list[int] = field(default_factory=list)
    start_positions: list[int] = field(default_factory=list)  # training labels (0 = [CLS])
    end_positions: list[int] = field(default_factory=list)
    answerable: list[int] = field(default_factory=list)
    # per example: char offsets [n_doc_tokens, 2] of its context tokens
    doc_offsets: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)

    def token_type_ids(self, i: int) -> np.ndarray:
        tt = np.zeros(len(self.input_ids[i]), dtype=np.int64)
        tt[self.context_start[i]:] = 1
        return tt

    def max_context(self, i: int) -> np.ndarray:
        """[span_length] bool: tokens of window i that have their max context there."""
        return self.owner_end[i] == self.span_start[i] + self.span_length[i]

    def char_span(self, i: int, start: int, end: int) -> tuple[int, int]:
        """Context characters [a, b) covered by window tokens start..end (both context tokens)."""
        offsets = self.doc_offsets[self.example_index[i]]
        shift = self.span_start[i] - self.context_start[i]
        return int(offsets[start + shift][0]), int(offsets[end + shift][1])

    def item(self, i: int) -> dict[str, np.ndarray | int]:
        return {"input_ids": self.input_ids[i], "token_type_ids": self.token_type_ids(i),
                "start_positions": self.start_positions[i], "end_positions": self.end_positions[i],
                "answerable": self.answerable[i]}


def _plain(tokenizer: Tokenizer) -> Tokenizer:
    """A copy without truncation/padding, so offsets and lengths are the raw ones."""
    tok = Tokenizer.from_str(tokenizer.to_str())
    tok.no_truncation()
    tok.no_padding()
    return tok


def _special_id(tokenizer: Tokenizer, token: str) -> int:
    i = tokenizer.token_to_id(token)
    if i is None:
        raise ValueError(f"tokenizer has no {token} token (BERT WordPiece specials expected)")
    return i


def window_spans(n_tokens: int, max_tokens: int, stride: int) -> list[tuple[int, int]]:
    """(start, length) windows over `n_tokens`; starts are `stride` apart, the last reaches the end."""
    spans, start = [], 0
    while True:
        length = min(n_tokens - start, max_tokens)
        spans.append((start, length))
        if start + length >= n_tokens:
            return spans
        start += min(length, stride)


def max_context_owners(spans: list[tuple[int, int]], n_tokens: int) -> np.ndarray:
    """[n_tokens] doc end (exclusive) of the window where each token sees the most context,
    score min(left, right) + 0.01 * length, ties to the earlier window. Window ends strictly increase,
    so the end identifies the window."""
    best = np.full(n_tokens, -np.inf)
    owner_end = np.zeros(n_tokens, dtype=np.int64)
    for start, length in spans:
        pos = np.arange(length)
        score = np.minimum(pos, length - 1 - pos) + 0.01 * length
        better = score > best[start:start + length]
        best[start:start + length][better] = score[better]
        owner_end[start:start + length][better] = start + length
    return owner_end


def char_span_to_tokens(offsets: np.ndarray, start: int, end: int) -> tuple[int, int] | None:
    """First/last token overlapping the character span [start, end); None if no token does."""
    if len(offsets) == 0 or end <= start:
        return None
    overlap = (offsets[:, 1] > start) & (offsets[:, 0] < end) & (offsets[:, 1] > offsets[:, 0])
    idx = np.flatnonzero(overlap)
    return (int(idx[0]), int(idx[-1])) if len(idx) else None


def _answer_tokens(ex: SquadExample, offsets: np.ndarray) -> tuple[int, int] | None:
    """The token span of the first answer that can be located in the context's tokens, or None."""
    for a in ex.answers:
        if a.start >= 0:
            span = char_span_to_tokens(offsets, a.start, a.start + len(a.text))
            if span is not None:
                return span
    return None


def build_features(examples: Sequence[SquadExample], tokenizer: Tokenizer, cfg: FeatureConfig,
                   training: bool) -> tuple[SquadFeatures, FeatureReport]:
    """Windows for every example. With training=True, answerable examples whose answer cannot be located
    in the context's tokens are skipped (counted); unanswerable v2.0 examples are kept (label [CLS])."""
    tok = _plain(tokenizer)
    cls_id, sep_id = _special_id(tok, "[CLS]"), _special_id(tok, "[SEP]")
    feats, rep = SquadFeatures(), FeatureReport(examples=len(examples))

    # Paragraphs are shared by many questions: tokenize each distinct context once.
    contexts = list(dict.fromkeys(ex.context for ex in examples))
    ctx_enc = {c: e for c, e in zip(contexts, tok.encode_batch(contexts, add_special_tokens=False),
                                    strict=True)}
    q_enc = tok.encode_batch([ex.question for ex in examples], add_special_tokens=False)
    ctx_arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    for ex_i, (ex, q) in enumerate(zip(examples, q_enc, strict=True)):
        if ex.context not in ctx_arrays:
            e = ctx_enc[ex.context]
            ctx_arrays[ex.context] = (np.asarray(e.ids, dtype=np.int64),
                                      np.asarray(e.offsets, dtype=np.int64).reshape(-1, 2))
        doc_ids, offsets = ctx_arrays[ex.context]
        q_ids = q.ids
        if len(q_ids) > cfg.max_query_length:
            q_ids = q_ids[:cfg.max_query_length]
            rep.truncated_questions += 1

        answer_tokens = None if ex.is_impossible else _answer_tokens(ex, offsets)
        if not ex.is_impossible and answer_tokens is None:
            rep.answers_not_tokenizable += 1
            if training:  # nothing to learn from a span label we cannot place
                rep.skipped_examples += 1
                continue

        max_doc = cfg.max_seq_length - len(q_ids) - 3
        spans = window_spans(len(doc_ids), max_doc, cfg.doc_stride)
        rep.long_contexts += len(spans) > 1
        owner_end = max_context_owners(spans, len(doc_ids))
        ctx_begin = len(q_ids) + 2
        head = np.asarray([cls_id, *q_ids, sep_id], dtype=np.int64)
        in_some_window = False
        for s, n in spans:
            start_pos = end_pos = 0
            if answer_tokens is not None and s <= answer_tokens[0] and answer_tokens[1] < s + n:
                start_pos, end_pos = answer_tokens[0] - s + ctx_begin, answer_tokens[1] - s + ctx_begin
                in_some_window = True
            feats.input_ids.append(np.concatenate([head, doc_ids[s:s + n], [sep_id]]))
            feats.context_start.append(ctx_begin)
            feats.span_start.append(s)
            feats.span_length.append(n)
            feats.owner_end.append(owner_end[s:s + n])
            feats.example_index.append(ex_i)
            feats.start_positions.append(start_pos)
            feats.end_positions.append(end_pos)
            feats.answerable.append(int(not ex.is_impossible))
        if answer_tokens is not None and not in_some_window:
            rep.answers_outside_all_windows += 1
    # offsets indexed by example (shared arrays for shared contexts)
    feats.doc_offsets = [ctx_arrays[ex.context][1] if ex.context in ctx_arrays else np.zeros((0, 2), np.int64)
                         for ex in examples]
    rep.features = len(feats)
    log.info(rep.summary())
    return feats, rep
