"""SQuAD scoring against hand-computed cases (normalisation, EM/F1, v2 unanswerable, threshold sweep)."""

import json
import sys

import pytest
from helpers import run_process
from squad_fixtures import FIXTURES, REAL_DEV

from convbert.squad.data import gold_answers, load_squad_json
from convbert.squad.scoring import (
    best_threshold,
    exact_match,
    main,
    normalize_answer,
    score_squad_v1,
    score_squad_v2,
    token_f1,
)


@pytest.mark.parametrize("raw, norm", [
    ("The Cat.", "cat"),
    ("  A  quick,\tbrown-fox! ", "quick brownfox"),  # punctuation is deleted, not replaced by a space
    ("Theory of an apple", "theory of apple"),  # articles only as whole words
    ("the-end", "theend"),  # punctuation goes before articles are matched
    ("An", ""),
    ("THE END", "end"),
    ("Düsseldorf\u2019s", "düsseldorf\u2019s"),  # only ASCII punctuation is removed
    ("1,230 km", "1230 km"),
])
def test_normalize_answer(raw, norm):
    assert normalize_answer(raw) == norm


def test_exact_and_f1_hand_checked():
    assert exact_match("the Denver Broncos!", "Denver Broncos") == 1.0
    assert exact_match("Denver", "Denver Broncos") == 0.0
    # pred tokens [cat sat on mat], gold [cat on mat]: P = 3/4, R = 1 -> F1 = 6/7
    assert token_f1("the cat sat on the mat", "cat on mat") == pytest.approx(6 / 7)
    # multiset overlap: dog x1, cat x1 -> P = R = 2/3
    assert token_f1("dog dog cat", "dog cat cat") == pytest.approx(2 / 3)
    assert token_f1("red", "blue") == 0.0


def test_empty_answers_differ_between_versions():
    # v1.1: no overlap -> F1 0 even if both normalise to empty; EM compares normalised strings
    assert token_f1("", "the", version="1.1") == 0.0
    assert exact_match("", "the") == 1.0
    # v2.0: F1 is 1 iff both sides are empty
    assert token_f1("", "", version="2.0") == 1.0
    assert token_f1("an", "", version="2.0") == 1.0
    assert token_f1("something", "", version="2.0") == 0.0


def test_score_v1_max_over_gold_and_missing():
    gold = {"q1": ["Denver Broncos"], "q2": ["1937", "in 1937"], "q3": ["cat on mat"]}
    preds = {"q1": "the Denver Broncos", "q2": "in 1937.", "q3": "the cat sat on the mat"}
    out = score_squad_v1(gold, preds)
    assert out["exact"] == pytest.approx(200 / 3)
    assert out["f1"] == pytest.approx(100 * (2 + 6 / 7) / 3)
    assert out["total"] == 3 and out["missing"] == 0
    del preds["q3"]  # a missing prediction counts as wrong
    out = score_squad_v1(gold, preds)
    assert out["exact"] == pytest.approx(200 / 3) and out["f1"] == pytest.approx(200 / 3)
    assert out["missing"] == 1


V2_GOLD = {"a1": ["Paris"], "a2": ["blue whale", "the blue whale"], "n1": [], "n2": ["the"]}
V2_PREDS = {"a1": "Paris", "a2": "whale", "n1": "", "n2": "something"}


def test_score_v2_unanswerable_and_splits():
    out = score_squad_v2(V2_GOLD, V2_PREDS)
    # n2's only gold answer normalises to "", so it counts as unanswerable
    assert out["HasAns_total"] == 2 and out["NoAns_total"] == 2
    assert out["exact"] == pytest.approx(50.0)
    assert out["f1"] == pytest.approx(100 * (1 + 2 / 3 + 1 + 0) / 4)
    assert out["HasAns_exact"] == pytest.approx(50.0)
    assert out["HasAns_f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert out["NoAns_exact"] == pytest.approx(50.0) and out["NoAns_f1"] == pytest.approx(50.0)
    assert "best_f1" not in out
    only_answerable = score_squad_v2({"a1": ["Paris"]}, {"a1": "Paris"})
    assert only_answerable["HasAns_exact"] == 100.0 and "NoAns_exact" not in only_answerable


def test_score_v2_threshold_and_sweep():
    odds = {"a1": -3.0, "a2": 1.0, "n1": 0.5, "n2": 2.0}
    out = score_squad_v2(V2_GOLD, V2_PREDS, odds, null_threshold=0.6)
    # odds > 0.6 -> predicted no-answer: a2 loses its partial credit, n2 becomes right
    assert out["exact"] == pytest.approx(75.0) and out["f1"] == pytest.approx(75.0)
    assert out["HasAns_f1"] == pytest.approx(50.0) and out["NoAns_exact"] == pytest.approx(100.0)
    # sweep (all null = 2): a1 +1 @-3 -> 3; n1 (empty pred) +0; a2 +0 EM / +2/3 F1 @1; n2 -1 @2
    assert out["best_exact"] == pytest.approx(75.0) and out["best_exact_thresh"] == -3.0
    assert out["best_f1"] == pytest.approx(100 * (3 + 2 / 3) / 4) and out["best_f1_thresh"] == 1.0


def test_best_threshold_respects_ties_and_all_null():
    has = {"x": True, "y": False}
    # equal odds cannot be separated: answering x also answers y (-1), so all-null (50%) stays best
    score, thresh = best_threshold({"x": 1.0, "y": 0.0}, {"x": "a", "y": "foo"}, {"x": 0.0, "y": 0.0}, has)
    assert score == pytest.approx(50.0) and thresh == -1.0  # below every odds value
    score, thresh = best_threshold({"x": 1.0, "y": 0.0}, {"x": "a", "y": "foo"}, {"x": 0.0, "y": 0.5}, has)
    assert score == pytest.approx(100.0) and thresh == 0.0


def test_v2_missing_predictions_score_zero_under_a_threshold_and_in_the_sweep():
    gold = {"a": ["Paris"], "b": [], "c": [], "d": ["London"]}
    preds = {"a": "Paris", "d": "Rome"}  # b and c (unanswerable) have no prediction: 0, like everywhere else
    out = score_squad_v2(gold, preds, {"a": -1.0, "d": 0.5})
    assert out["exact"] == out["best_exact"] == 25.0 and out["missing"] == 2
    out = score_squad_v2(gold, preds, {"a": -1.0, "b": 3.0, "c": 3.0, "d": 0.5}, null_threshold=0.0)
    assert out["exact"] == 25.0 and out["NoAns_exact"] == 0.0


def test_v2_non_finite_null_odds_are_refused(tmp_path):
    # NaN cannot be ordered against a threshold: the best score would depend on the order of the questions
    with pytest.raises(ValueError, match=r"null_odds: 1 no-answer odds are not finite \(e.g. id 'a': nan\)"):
        score_squad_v2({"b": ["w"], "a": []}, {"a": "bad", "b": "w"}, {"a": float("nan"), "b": 0.0})
    data = FIXTURES / "dev-v2.0.json"
    gold = gold_answers(load_squad_json(data)[0])
    (tmp_path / "p.json").write_text(json.dumps({q: "" for q in gold}))
    (tmp_path / "o.json").write_text("{" + ", ".join(f'"{q}": NaN' for q in gold) + "}")  # json accepts NaN
    with pytest.raises(ValueError, match=r"o\.json: \d+ no-answer odds are not finite"):
        main([str(data), str(tmp_path / "p.json"), "--null-odds", str(tmp_path / "o.json")])
    with pytest.raises(SystemExit):  # a threshold without the odds it is compared with
        main([str(data), str(tmp_path / "p.json"), "--threshold", "0.5"])


def test_cli_runs_as_a_module_without_warnings(tmp_path):
    data = FIXTURES / "dev-v1.1.json"
    gold = gold_answers(load_squad_json(data)[0])
    (tmp_path / "p.json").write_text(json.dumps({q: a[0] for q, a in gold.items()}))
    proc = run_process([sys.executable, "-W", "error", "-m", "convbert.squad.scoring", str(data),
                        str(tmp_path / "p.json")])
    assert proc.returncode == 0 and json.loads(proc.stdout)["exact"] == 100.0, proc.stderr


def test_cli_on_fixture(tmp_path, capsys):
    data = FIXTURES / "dev-v2.0.json"
    examples, _ = load_squad_json(data)
    gold = gold_answers(examples)
    preds = {q: (a[-1] if a else "") for q, a in gold.items()}
    odds = {q: (-1.0 if a else 1.0) for q, a in gold.items()}
    (tmp_path / "p.json").write_text(json.dumps(preds))
    (tmp_path / "o.json").write_text(json.dumps(odds))
    out = main([str(data), str(tmp_path / "p.json"), "--null-odds", str(tmp_path / "o.json")])
    assert out["exact"] == 100.0 and out["best_f1"] == 100.0 and out["best_f1_thresh"] == -1.0
    assert out["NoAns_total"] == sum(1 for a in gold.values() if not a) > 0
    assert json.loads(capsys.readouterr().out)["f1"] == 100.0
    (tmp_path / "bad.json").write_text('{"q": "x",}')
    with pytest.raises(ValueError, match=r"bad\.json.*line 1"):
        main([str(data), str(tmp_path / "bad.json")])


@pytest.mark.parametrize("content, message", [
    ({"q": 3}, r"1 value\(s\) are not strings \(e.g. id 'q': int 3\)"),
    (["a", "b"], "expected a JSON object of question id -> answer text, got list"),
    ({"other-1": "x", "other-2": "y"}, "none of its 2 ids are questions of the dataset"),
    ({}, "none of its 0 ids"),
])
def test_cli_rejects_bad_predictions_files(tmp_path, content, message):
    data = FIXTURES / "dev-v1.1.json"
    gold = gold_answers(load_squad_json(data)[0])
    if isinstance(content, dict) and "q" in content:
        content = {next(iter(gold)): 3}
    path = tmp_path / "p.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=message.replace("'q'", "'.*'")) as e:
        main([str(data), str(path)])
    assert str(path) in str(e.value)


def test_cli_counts_and_names_foreign_and_missing_ids(tmp_path, capsys):
    data = FIXTURES / "dev-v1.1.json"
    gold = gold_answers(load_squad_json(data)[0])
    first, *rest = list(gold)
    (tmp_path / "p.json").write_text(json.dumps({first: gold[first][0], "stray-id": "x"}))
    out = main([str(data), str(tmp_path / "p.json")])
    err = capsys.readouterr().err
    assert "1 id(s) not questions of" in err and "'stray-id'" in err
    assert f"{len(rest)} id(s) missing (scored 0)" in err
    assert out["foreign"] == 1 and out["missing"] == len(rest) and out["exact"] == pytest.approx(100 / len(gold))
    v2 = FIXTURES / "dev-v2.0.json"
    q2 = next(iter(gold_answers(load_squad_json(v2)[0])))
    (tmp_path / "p2.json").write_text(json.dumps({q2: ""}))
    (tmp_path / "o.json").write_text(json.dumps({q2: "high"}))
    with pytest.raises(ValueError, match=r"o\.json: 1 value\(s\) are not numbers"):
        main([str(v2), str(tmp_path / "p2.json"), "--null-odds", str(tmp_path / "o.json")])


@pytest.mark.skipif(not REAL_DEV.exists(), reason="real SQuAD dev-v1.1.json not available")
def test_real_dev_gold_first_answers_score_100():
    examples, report = load_squad_json(REAL_DEV)
    assert report.examples == 10570
    gold = gold_answers(examples)
    out = score_squad_v1(gold, {q: a[0] for q, a in gold.items()})
    assert out["exact"] == 100.0 and out["f1"] == 100.0
