"""SQuAD windows, labels and the offset round trip; post-processing of start/end logits."""

import numpy as np
import pytest
from squad_fixtures import FIXTURES, REAL_DEV, fixture_tokenizer, train_wordpiece

from convbert.squad.data import Answer, SquadExample, load_squad_json
from convbert.squad.features import FeatureConfig, build_features, max_context_owners, window_spans
from convbert.squad.postprocess import PostprocessConfig, postprocess


def test_window_spans_stride_is_distance_between_starts():
    assert window_spans(10, 4, 3) == [(0, 4), (3, 4), (6, 4)]
    assert window_spans(10, 4, 6) == [(0, 4), (4, 4), (8, 2)]  # never skips tokens
    assert window_spans(3, 4, 2) == [(0, 3)]
    assert window_spans(11, 4, 3) == [(0, 4), (3, 4), (6, 4), (9, 2)]


def test_max_context_owners():
    spans = window_spans(11, 4, 3)  # (0,4) (3,4) (6,4) (9,2)
    owner_end = max_context_owners(spans, 11)
    ends = {s + n: (s, n) for s, n in spans}
    for tok, end in enumerate(owner_end):  # the owner is a window that holds the token
        s, n = ends[int(end)]
        assert s <= tok < s + n
    # token 3: last of window 0, first of window 1 (tie -> earlier); token 4: 2nd of window 1
    assert owner_end[3] == 4 and owner_end[4] == 7 and owner_end[10] == 11


def _oracle_logits(feats):
    """Logits that put all mass on each window's labelled span ([CLS] when outside)."""
    starts, ends = [], []
    for i in range(len(feats)):
        n = len(feats.input_ids[i])
        s, e = np.zeros(n), np.zeros(n)
        s[feats.start_positions[i]] = e[feats.end_positions[i]] = 10.0
        starts.append(s)
        ends.append(e)
    return starts, ends


def _round_trip(examples, tok, cfg):
    """Check window structure; return, per answerable question, the texts its labelled windows recover."""
    feats, rep = build_features(examples, tok, cfg, training=True)
    recovered = {ex.qid: [] for ex in examples if ex.answers}
    for i in range(len(feats)):
        ids = feats.input_ids[i]
        assert len(ids) <= cfg.max_seq_length
        assert ids[0] == tok.token_to_id("[CLS]") and ids[-1] == tok.token_to_id("[SEP]")
        assert ids[feats.context_start[i] - 1] == tok.token_to_id("[SEP]")
        tt = feats.token_type_ids(i)
        assert tt[:feats.context_start[i]].sum() == 0 and tt[feats.context_start[i]:].all()
        ex = examples[feats.example_index[i]]
        if not ex.answers:
            assert feats.start_positions[i] == feats.end_positions[i] == 0 and feats.answerable[i] == 0
        elif feats.start_positions[i] > 0:
            a, b = feats.char_span(i, feats.start_positions[i], feats.end_positions[i])
            recovered[ex.qid].append(ex.context[a:b])
    return feats, rep, recovered


def test_round_trip_every_answer_recovered_from_a_window():
    examples, _ = load_squad_json(FIXTURES / "train-v2.0.json")
    cfg = FeatureConfig(max_seq_length=40, max_query_length=12, doc_stride=8)
    feats, rep, recovered = _round_trip(examples, fixture_tokenizer(), cfg)
    assert rep.long_contexts > 0 and rep.truncated_questions > 0  # short windows force both paths
    assert rep.answers_outside_all_windows == 0 and rep.skipped_examples == 0
    for ex in examples:
        if ex.answers:  # fixture answers lie on word boundaries: every labelled window recovers them
            assert recovered[ex.qid] and set(recovered[ex.qid]) == {ex.answers[0].text}
    # answerable examples have windows labelled both with and without their answer
    answerable = [i for i in range(len(feats)) if feats.answerable[i]]
    assert any(feats.start_positions[i] == 0 for i in answerable)
    assert any(feats.start_positions[i] > 0 for i in answerable)
    assert sum(len(v) > 1 for v in recovered.values()) > 0  # overlapping windows share answers


def test_answer_too_long_for_any_window_and_unlocatable_answer():
    tok = fixture_tokenizer()
    ctx = "The Rhine rises in the Swiss Alps and flows north through Germany before it reaches the North Sea."
    long_answer = "rises in the Swiss Alps and flows north through Germany"
    examples = [
        SquadExample("long", "Where does the Rhine rise?", ctx, [Answer(long_answer, ctx.find(long_answer))]),
        SquadExample("lost", "Where?", ctx, [Answer("Berlin", -1)]),
    ]
    cfg = FeatureConfig(max_seq_length=16, max_query_length=6, doc_stride=4)
    feats, rep = build_features(examples, tok, cfg, training=True)
    assert rep.answers_outside_all_windows == 1 and rep.skipped_examples == 1
    assert set(feats.example_index) == {0} and set(feats.start_positions) == {0}
    feats, rep = build_features(examples, tok, cfg, training=False)  # evaluation keeps every question
    assert set(feats.example_index) == {0, 1} and rep.skipped_examples == 0


def test_tokenizer_truncation_settings_are_ignored():
    tok = train_wordpiece([ex.context for ex in load_squad_json(FIXTURES / "dev-v1.1.json")[0]], 300)
    tok.enable_truncation(8)
    examples, _ = load_squad_json(FIXTURES / "dev-v1.1.json")
    feats, rep = build_features(examples, tok, FeatureConfig(64, 16, 16), training=True)
    assert rep.skipped_examples == 0 and max(len(x) for x in feats.input_ids) == 64


@pytest.mark.skipif(not REAL_DEV.exists(), reason="real SQuAD dev-v1.1.json not available")
def test_round_trip_on_real_dev_subset():
    examples, _ = load_squad_json(REAL_DEV)
    examples = examples[:1500]
    tok = train_wordpiece(list({e.context for e in examples}) + [e.question for e in examples], 3000)
    _, rep, recovered = _round_trip(examples, tok, FeatureConfig(128, 32, 64))
    assert rep.long_contexts > 0 and rep.skipped_examples == 0 and rep.answers_outside_all_windows == 0
    exact = 0
    for e in examples:
        texts = recovered[e.qid]
        assert texts and all(e.answers[0].text in t for t in texts)
        exact += e.answers[0].text in texts
    # the rest are annotations that cut inside a token (e.g. "1937" inside "1937s")
    assert exact / len(examples) > 0.99


def _one_window(start, end, ctx_start=3, length=6, answerable=None, owner_end=None):
    """A single-example, single-window feature set with hand-written logits."""
    ctx = "alpha beta gamma delta epsilon zeta"
    ex = SquadExample("q", "x?", ctx, [])
    offsets = np.array([[ctx.find(w), ctx.find(w) + len(w)] for w in ctx.split()])
    from convbert.squad.features import SquadFeatures

    f = SquadFeatures(input_ids=[np.zeros(ctx_start + length + 1, dtype=np.int64)], context_start=[ctx_start],
                      span_start=[0], span_length=[length],
                      owner_end=[np.full(length, length) if owner_end is None else np.asarray(owner_end)],
                      example_index=[0], start_positions=[0], end_positions=[0], answerable=[0],
                      doc_offsets=[offsets])
    return [ex], f, [np.asarray(start, float)], [np.asarray(end, float)], answerable


def test_postprocess_span_rules():
    #          CLS  q   SEP  alpha beta gamma delta epsilon zeta SEP
    start = [0.0, 9.0, 0.0, 1.0, 5.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    end = [0.0, 9.0, 0.0, 0.0, 0.0, 1.0, 4.0, 0.0, 3.0, 9.0]
    ex, f, s, e, _ = _one_window(start, end)
    cfg = PostprocessConfig(n_best=20, max_answer_length=30)
    # question tokens and the final [SEP] are never part of an answer; best: beta..delta (5 + 4)
    full = postprocess(ex, f, s, e, None, cfg, version2=False)
    assert full.answers["q"] == "beta gamma delta"
    scores = [c["score"] for c in full.nbest["q"]]
    assert scores == sorted(scores, reverse=True)
    # at most 2 tokens: beta..gamma (5 + 1) beats delta alone (0 + 4)
    short = postprocess(ex, f, s, e, None, PostprocessConfig(max_answer_length=2), version2=False)
    assert short.answers["q"] == "beta gamma"
    assert all(len(c["text"].split()) <= 2 for c in short.nbest["q"])
    # beta has max context in another window (ending at doc token 7) that holds every span from beta
    ex, f, s, e, _ = _one_window(start, end, owner_end=[6, 7, 6, 6, 6, 6])
    assert postprocess(ex, f, s, e, None, cfg, version2=False).answers["q"] == "alpha beta gamma delta"
    # ... but if that window ends before delta (doc end 3), spans from beta to delta or beyond stay here
    ex, f, s, e, _ = _one_window(start, end, owner_end=[6, 3, 6, 6, 6, 6])
    assert postprocess(ex, f, s, e, None, cfg, version2=False).answers["q"] == "beta gamma delta"
    ex, f, s, e, _ = _one_window(start, end, owner_end=[6, 5, 6, 6, 6, 6])  # only beta..zeta survives
    assert postprocess(ex, f, s, e, None, cfg, version2=False).answers["q"] == "beta gamma delta epsilon zeta"
    # n_best=1: the top start (beta) and top end (delta) only
    ex, f, s, e, _ = _one_window(start, end)
    p = postprocess(ex, f, s, e, None, PostprocessConfig(n_best=1), version2=False)
    assert [c["text"] for c in p.nbest["q"]] == ["beta gamma delta"]


def test_postprocess_no_answer_decisions():
    start = [6.0, 0, 0, 1.0, 2.0, 0, 0, 0, 0, 0]
    end = [6.0, 0, 0, 0, 0, 3.0, 0, 0, 0, 0]
    ex, f, s, e, _ = _one_window(start, end)
    span = postprocess(ex, f, s, e, None, PostprocessConfig(null_score="span"), version2=True)
    # null 12 vs best span beta..gamma 5 -> odds 7 > 0 -> ""
    assert span.null_odds["q"] == pytest.approx(7.0) and span.answers["q"] == ""
    assert span.best_spans["q"] == "beta gamma"
    lenient = postprocess(ex, f, s, e, None, PostprocessConfig(null_score="span", null_threshold=7.5), True)
    assert lenient.answers["q"] == "beta gamma"
    clf = postprocess(ex, f, s, e, [2.5], PostprocessConfig(null_score="classifier"), version2=True)
    assert clf.null_odds["q"] == pytest.approx(-2.5) and clf.answers["q"] == "beta gamma"
    with pytest.raises(ValueError, match="answerable logits"):
        postprocess(ex, f, s, e, None, PostprocessConfig(null_score="classifier"), version2=True)


def test_postprocess_picks_best_window():
    examples, _ = load_squad_json(FIXTURES / "dev-v1.1.json")
    tok = fixture_tokenizer()
    feats, _ = build_features(examples, tok, FeatureConfig(40, 12, 8), training=True)
    s, e = _oracle_logits(feats)
    # a distractor window with a weaker span must lose to the labelled one
    for i in range(len(feats)):
        if feats.start_positions[i] == 0 and feats.span_length[i] > 2:
            c = feats.context_start[i]
            s[i][c] = e[i][c + 1] = 4.0
    preds = postprocess(examples, feats, s, e, None, PostprocessConfig(), version2=False)
    assert all(preds.answers[ex.qid] == ex.answers[0].text for ex in examples)
