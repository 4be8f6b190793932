"""SQuAD loading: official JSON (both versions), hub path through `datasets` on local files, bad input."""

import json

import pytest
from squad_fixtures import FIXTURES

from convbert.squad.data import gold_answers, load_squad, load_squad_json, parse_squad_json


def _official(qas, context="Paris is the capital of France.", version="1.1"):
    return {"version": version, "data": [{"title": "T", "paragraphs": [{"context": context, "qas": qas}]}]}


def test_official_json_both_versions():
    v1, rep1 = load_squad_json(FIXTURES / "dev-v1.1.json")
    v2, rep2 = load_squad_json(FIXTURES / "dev-v2.0.json")
    assert rep1.examples == len(v1) == 8 and rep1.unanswerable == 0
    assert rep2.examples == 11 and rep2.unanswerable == 3
    for ex in v1 + v2:
        for a in ex.answers:
            assert ex.context[a.start:a.start + len(a.text)] == a.text
    # v2 plausible answers of unanswerable questions are not gold answers
    assert all(ex.answers == [] for ex in v2 if ex.is_impossible)
    assert gold_answers(v1)["d1q0001"] == ["1937", "in 1937"]


def test_answer_start_mismatch_is_repaired_or_counted():
    ctx = "Paris is the capital of France. Paris is large."
    qas = [
        {"id": "ok", "question": "q?", "answers": [{"text": "France", "answer_start": 24}]},
        {"id": "off", "question": "q?", "answers": [{"text": "Paris", "answer_start": 30}]},  # nearest: 32
        {"id": "gone", "question": "q?", "answers": [{"text": "Berlin", "answer_start": 0}]},
    ]
    examples, rep = parse_squad_json(_official(qas, ctx), "x.json")
    assert rep.fixed_starts == 1 and rep.unmatched_answers == 1
    assert rep.bad_ids == ["off", "gone"]
    by_id = {ex.qid: ex for ex in examples}
    assert by_id["off"].answers[0].start == 32
    assert by_id["gone"].answers[0].start == -1 and by_id["gone"].answers[0].text == "Berlin"
    assert "1 repaired, 1 not found" in rep.summary()


def test_malformed_json_names_file_and_line(tmp_path):
    bad = tmp_path / "dev-v1.1.json"
    bad.write_text('{"version": "1.1",\n "data": [\n  {"title": "x",]\n}')
    with pytest.raises(ValueError, match=r"dev-v1\.1\.json: invalid JSON at line 3"):
        load_squad_json(bad)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_squad_json(tmp_path / "nope.json")


@pytest.mark.parametrize("data, where", [
    ({"version": "1.1"}, "top level: missing key 'data'"),
    ({"data": [{"title": "t"}]}, r"data\[0\]: missing key 'paragraphs'"),
    (_official([{"id": "a", "answers": []}]),
     r"data\[0\]\.paragraphs\[0\]\.qas\[0\]: missing key 'question'"),
    (_official([{"id": "a", "question": "q", "answers": [{"text": "x", "answer_start": "3"}]}]),
     r"qas\[0\]\.answers\[0\]\.answer_start: expected int"),
    (_official([{"id": "a", "question": "q", "answers": []}, {"id": "a", "question": "r", "answers": []}]),
     "duplicate question id 'a'"),
])
def test_structure_errors_name_the_spot(data, where):
    with pytest.raises(ValueError, match=where):
        parse_squad_json(data, "f.json")


def _hub_rows(path):
    """Official JSON -> the flat hub schema (id, title, context, question, answers{text, answer_start})."""
    rows = []
    for art in json.loads(path.read_text(encoding="utf-8"))["data"]:
        for para in art["paragraphs"]:
            for qa in para["qas"]:
                rows.append({"id": qa["id"], "title": art["title"], "context": para["context"],
                             "question": qa["question"],
                             "answers": {"text": [a["text"] for a in qa["answers"]],
                                         "answer_start": [a["answer_start"] for a in qa["answers"]]}})
    return rows


def test_hub_path_through_datasets_matches_json(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    hub = tmp_path / "squad_v2_local"
    hub.mkdir()
    for split, name in [("train", "train-v2.0.json"), ("validation", "dev-v2.0.json")]:
        with open(hub / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for row in _hub_rows(FIXTURES / name):
                f.write(json.dumps(row) + "\n")
    # same code path as load_squad("2.0", "dev") with the hub name, on a local data directory
    from_hub, rep = load_squad("2.0", "dev", hub, cache_dir=str(tmp_path / "cache"))
    from_json, _ = load_squad("2.0", "dev", FIXTURES)
    assert rep.source.endswith("[validation]")
    assert [(e.qid, e.question, e.context, e.answers) for e in from_hub] == \
        [(e.qid, e.question, e.context, e.answers) for e in from_json]
    assert rep.unanswerable == 3


def test_load_squad_dispatch_and_errors(tmp_path):
    train, _ = load_squad("1.1", "train", FIXTURES)  # directory with the official file names
    assert len(train) == 17
    one, _ = load_squad("2.0", "validation", FIXTURES / "dev-v2.0.json")
    assert len(one) == 11
    with pytest.raises(ValueError, match="unknown SQuAD version"):
        load_squad("3.0", "train", FIXTURES)
    only_dev = tmp_path / "squad"
    only_dev.mkdir()
    (only_dev / "dev-v1.1.json").write_bytes((FIXTURES / "dev-v1.1.json").read_bytes())
    with pytest.raises(FileNotFoundError, match=r"train-v1\.1\.json not found .* holds dev-v1\.1\.json"):
        load_squad("1.1", "train", only_dev)  # not handed to datasets (whose error would not name the file)
