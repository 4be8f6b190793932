"""GLUE loaders: original directory (with its quirks) and hub layout give identical examples; bad input
fails with errors naming file and line."""

import os
from pathlib import Path

import pytest
from glue_fixtures import QQP_BAD_LINES, make_benchmark, write_glue_dir, write_hub_dir

from convbert.glue import GlueDataError, get_task, load_dir_split, load_hub_split, load_split
from convbert.glue.tasks import TASKS

os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
REAL_GLUE = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"


@pytest.fixture(scope="module")
def bench():
    return make_benchmark()


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory, bench):
    return write_glue_dir(tmp_path_factory.mktemp("glue"), bench)


def test_dir_and_hub_give_identical_examples(tmp_path, bench, glue_dir):
    hub = write_hub_dir(tmp_path / "hub", bench)
    n_splits = 0
    for name, splits in bench.items():
        for split, expected in splits.items():
            from_dir = load_split(name, split, glue_dir=glue_dir)
            from_hub = load_split(name, split, hub_path=str(hub), cache_dir=str(tmp_path / "cache"))
            assert from_dir.examples == from_hub.examples, (name, split)
            assert [(e.idx, e.text_a, e.text_b) for e in from_dir.examples] == [
                (e.idx, e.text_a, e.text_b) for e in expected
            ]
            labels = [e.label for e in from_dir.examples]
            assert labels == pytest.approx([e.label for e in expected], abs=1e-6)
            n_splits += 1
    assert n_splits == 30  # 9 tasks x (train, dev, test) + MNLI's second dev and test sets and AX


def test_original_layout_quirks(glue_dir, bench):
    cola = load_dir_split("cola", "train", glue_dir)  # header-less: the first line is an example
    assert cola.examples[0].text_a == bench["cola"]["train"][0].text_a
    assert len(load_dir_split("cola", "validation", glue_dir)) == 12  # no final newline
    texts = [e.text_a for e in cola.examples + load_dir_split("sst2", "train", glue_dir).examples]
    assert any('"' in t for t in texts)  # quote characters survive (quoting off)
    assert load_dir_split("mrpc", "train", glue_dir).examples[0].label in (0, 1)  # header starts with a BOM
    qqp = load_dir_split("qqp", "train", glue_dir)
    assert len(qqp) == 24 and qqp.skipped_lines == [5, 6]  # header is line 1, bad lines after 3 rows
    mnli = load_dir_split("mnli", "validation_mismatched", glue_dir)
    assert {e.label for e in mnli.examples} <= {0, 1, 2}
    assert load_dir_split("mnli", "test_matched", glue_dir).examples[0].label is None
    assert get_task("MNLI").metrics == ("accuracy_m", "accuracy_mm")
    # WNLI: 1 = entailment in both sources (reverse of RTE)
    assert get_task("wnli").label_names[1] == "entailment" and get_task("rte").label_names[0] == "entailment"


def _replace_line(path: Path, lineno: int, new: str) -> None:
    lines = path.read_text().split("\n")
    lines[lineno - 1] = new
    path.write_text("\n".join(lines))


def test_bad_input_errors(tmp_path, bench):
    root = write_glue_dir(tmp_path / "glue", bench, tasks=["sst2", "rte", "stsb", "cola"])
    with pytest.raises(KeyError, match="unknown GLUE task 'foo'"):
        load_split("foo", "train", glue_dir=root)
    with pytest.raises(KeyError, match="no split 'dev'"):
        load_split("rte", "dev", glue_dir=root)
    with pytest.raises(GlueDataError, match="no mrpc task directory"):
        load_dir_split("mrpc", "train", root)
    with pytest.raises(GlueDataError, match="does not exist"):
        load_dir_split("rte", "train", tmp_path / "nowhere")
    (root / "RTE" / "test.tsv").unlink()
    with pytest.raises(GlueDataError, match=r"RTE/test.tsv: missing 'test' split"):
        load_dir_split("rte", "test", root)

    _replace_line(root / "RTE" / "train.tsv", 4, "2\tonly two fields")
    with pytest.raises(GlueDataError, match=r"RTE/train.tsv:4: malformed row, 2 tab-separated fields"):
        load_dir_split("rte", "train", root)
    _replace_line(root / "SST-2" / "dev.tsv", 7, "a fine film\t2")
    with pytest.raises(GlueDataError, match=r"SST-2/dev.tsv:7: label '2' not in sst2's label set"):
        load_dir_split("sst2", "validation", root)
    _replace_line(root / "STS-B" / "train.tsv", 3, "\t".join(["1"] + ["x"] * 8 + ["7.5"]))
    with pytest.raises(GlueDataError, match=r"STS-B/train.tsv:3: STS-B score 7.5 outside"):
        load_dir_split("stsb", "train", root)
    _replace_line(root / "CoLA" / "train.tsv", 2, "gj04\tyes\t\tsentence")
    with pytest.raises(GlueDataError, match=r"CoLA/train.tsv:2: label 'yes'"):
        load_dir_split("cola", "train", root)
    path = root / "RTE" / "dev.tsv"  # Latin-1 text in a UTF-8 file: named by file and line like the rest
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join([*lines[:2], lines[2].replace(b"\t", "caf\u00e9\t".encode("latin-1"), 1), *lines[3:]]))
    with pytest.raises(GlueDataError, match=r"RTE/dev.tsv:3: not UTF-8 text \(byte 0xe9"):
        load_dir_split("rte", "validation", root)


def test_qqp_tolerates_only_known_malformed_lines(tmp_path, bench):
    root = write_glue_dir(tmp_path / "glue", bench, tasks=["qqp", "qnli"])
    assert load_dir_split("qqp", "train", root).skipped_lines == [5, 6]
    assert all(len(line.split("\t")) != 6 for line in QQP_BAD_LINES)
    _replace_line(root / "QNLI" / "train.tsv", 3, "1\tbroken")  # not QQP: fatal
    with pytest.raises(GlueDataError, match="QNLI/train.tsv:3"):
        load_dir_split("qnli", "train", root)


def test_hub_label_outside_label_set(tmp_path):
    import datasets

    (tmp_path / "hub" / "sst2").mkdir(parents=True)
    ds = datasets.Dataset.from_dict({"sentence": ["a", "b"], "label": [1, 3], "idx": [0, 1]})
    ds.to_parquet(str(tmp_path / "hub" / "sst2" / "validation-00000-of-00001.parquet"))
    (tmp_path / "hub" / "README.md").write_text(
        "---\nconfigs:\n- config_name: sst2\n  data_files:\n"
        "  - split: validation\n    path: sst2/validation-*\n---\n"
    )
    with pytest.raises(GlueDataError, match=r"sst2/validation row 1: label 3 outside sst2's labels 0..1"):
        load_hub_split("sst2", "validation", str(tmp_path / "hub"), cache_dir=str(tmp_path / "cache"))


@pytest.mark.skipif(not REAL_GLUE.is_dir(), reason="real GLUE files not present")
def test_real_glue_row_counts():
    counts = {"cola": (8551, 1043, 1063), "sst2": (67349, 872, 1821), "stsb": (5749, 1500, 1379),
              "rte": (2490, 277, 3000)}
    for name, expected in counts.items():
        got = tuple(len(load_dir_split(name, s, REAL_GLUE)) for s in ("train", "validation", "test"))
        assert got == expected, name
    assert set(TASKS) >= set(counts)
