"""A small synthetic GLUE benchmark written in both layouts: the original distribution directory (with
its quirks: header-less CoLA, MRPC's column names, unbalanced quotes, string labels, MNLI matched /
mismatched files, malformed QQP lines) and the HF hub repo layout (parquet + README configs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convbert.glue.data import GlueExample
from convbert.glue.tasks import TASKS, GlueTask

WORDS = (
    "the a cat dog film movie good bad great awful man woman child plays runs sees likes hates "
    "quick slow red blue house car tree river book story funny boring"
).split()
POSITIVE, NEGATIVE = "good great funny".split(), "bad awful boring".split()
QUOTES = ['"', "'", '``', "''", '"quoted"']


def _sentence(rng: np.random.Generator, label_word: str | None = None) -> str:
    words = list(rng.choice(WORDS, size=int(rng.integers(3, 12))))
    if label_word:
        words.insert(int(rng.integers(0, len(words))), label_word)
    if rng.random() < 0.3:  # quote characters that break csv quoting
        words.insert(int(rng.integers(0, len(words))), str(rng.choice(QUOTES)))
    return " ".join(words) + " ."


def make_examples(task: GlueTask, n: int, seed: int, labeled: bool = True) -> list[GlueExample]:
    """Deterministic examples whose label is signalled by a word, so a model can learn a little."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        if task.is_regression:
            label = round(float(rng.uniform(0, 5)), 3)
            cue = POSITIVE[0] if label > 2.5 else NEGATIVE[0]
        else:
            label = int(rng.integers(0, task.num_labels))
            cue = (NEGATIVE + POSITIVE)[label * 2 % 6]
        a = _sentence(rng, cue)
        b = _sentence(rng) if task.is_pair else None
        out.append(GlueExample(i, a, b, label if labeled else None))
    return out


def splits_of(task: GlueTask) -> list[str]:
    return ["train", *task.dev_splits, *task.test_splits]


def make_benchmark(n_train: int = 24, n_dev: int = 12, n_test: int = 8) -> dict[str, dict[str, list]]:
    data: dict[str, dict[str, list]] = {}
    for k, (name, task) in enumerate(TASKS.items()):
        data[name] = {}
        for j, split in enumerate(splits_of(task)):
            test = split in task.test_splits
            n = n_train if split == "train" else n_test if test else n_dev
            data[name][split] = make_examples(task, n, seed=100 * k + j, labeled=not test)
    return data


def _row(task: GlueTask, split: str, ex: GlueExample) -> list[str]:
    """One TSV row in the task's original column layout."""
    test = split in task.test_splits
    lab = "" if test else (f"{ex.label:.3f}" if task.is_regression else task.file_labels[ex.label])
    i, a, b = str(ex.idx), ex.text_a, ex.text_b
    name = task.name if split != "ax" else "ax"
    if name == "cola":
        return [i, a] if test else ["gj04", lab, "", a]
    if name == "sst2":
        return [i, a] if test else [a, lab]
    if name == "mrpc":
        return [i if test else lab, str(1000 + ex.idx), str(2000 + ex.idx), a, b]
    if name == "stsb":
        row = [i, "main-captions", "MSRvid", "2012test", "0001", "none", "none", a, b]
        return row if test else row + [lab]
    if name == "qqp":
        return [i, a, b] if test else [i, str(2 * ex.idx), str(2 * ex.idx + 1), a, b, lab]
    if name == "ax":
        return [i, a, b]
    if name == "mnli":
        parses = [f"( {a} )", f"( {b} )", f"(ROOT {a})", f"(ROOT {b})"]
        head = [i, "31193", "31193n", "fiction", *parses, a, b]
        if test:
            return head
        return head + ([lab] if split == "train" else [lab] * 5) + [lab]
    return [i, a, b] + ([] if test else [lab])  # qnli, rte, wnli


def _header(task: GlueTask, split: str) -> list[str] | None:
    test = split in task.test_splits
    name = task.name if split != "ax" else "ax"
    if name == "cola":
        return ["index", "sentence"] if test else None
    if name == "sst2":
        return ["index", "sentence"] if test else ["sentence", "label"]
    if name == "mrpc":  # download_glue_data.py copies the BOM of msr_paraphrase_*.txt into train/dev
        return ["index" if test else "\ufeffQuality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
    if name == "stsb":
        head = "index genre filename year old_index source1 source2 sentence1 sentence2".split()
        return head if test else head + ["score"]
    if name == "qqp":
        if test:
            return ["id", "question1", "question2"]
        return "id qid1 qid2 question1 question2 is_duplicate".split()
    if name == "ax":
        return ["index", "sentence1", "sentence2"]
    if name == "mnli":
        head = ("index promptID pairID genre sentence1_binary_parse sentence2_binary_parse sentence1_parse "
                "sentence2_parse sentence1 sentence2").split()
        if test:
            return head
        votes = ["label1"] if split == "train" else [f"label{k}" for k in range(1, 6)]
        return head + votes + ["gold_label"]
    a, b = task.dir_columns
    return ["index", a, b] + ([] if test else ["label"])


QQP_BAD_LINES = ["77\t154\t155\tis this a question broken", "by a newline ?\tanother question ?\t0"]


def write_glue_dir(root: Path, data: dict | None = None, tasks=None) -> Path:
    """Original-layout GLUE directory at root; QQP train gets two malformed lines after row 3."""
    data = data or make_benchmark()
    for name in tasks or data:
        task = TASKS[name]
        for split, examples in data[name].items():
            path = root / task.source(split).dir_path
            path.parent.mkdir(parents=True, exist_ok=True)
            header = _header(task, split)
            lines = ["\t".join(header)] if header else []
            lines += ["\t".join(_row(task, split, e)) for e in examples]
            if name == "qqp" and split == "train":
                lines[4:4] = QQP_BAD_LINES
            text = "\n".join(lines)
            if not (name == "cola" and split == "validation"):  # real CoLA dev has no final newline
                text += "\n"
            path.write_text(text, encoding="utf-8")
    return root


def write_hub_dir(root: Path, data: dict | None = None, tasks=None) -> Path:
    """A local copy of the nyu-mll/glue hub repo: <config>/<split>-00000-of-00001.parquet + README configs."""
    import datasets

    data = data or make_benchmark()
    configs: dict[str, list[str]] = {}
    for name in tasks or data:
        task = TASKS[name]
        for split, examples in data[name].items():
            src = task.source(split)
            a, b = task.hub_columns
            cols = {a: [e.text_a for e in examples]}
            feats = {a: datasets.Value("string")}
            if b:
                cols[b] = [e.text_b for e in examples]
                feats[b] = datasets.Value("string")
            cols["label"] = [-1 if e.label is None else e.label for e in examples]
            feats["label"] = (datasets.Value("float32") if task.is_regression
                              else datasets.ClassLabel(names=list(task.label_names)))
            cols["idx"] = [e.idx for e in examples]
            feats["idx"] = datasets.Value("int32")
            ds = datasets.Dataset.from_dict(cols, features=datasets.Features(feats))
            (root / src.hub_config).mkdir(parents=True, exist_ok=True)
            ds.to_parquet(str(root / src.hub_config / f"{src.hub_split}-00000-of-00001.parquet"))
            configs.setdefault(src.hub_config, []).append(src.hub_split)
    yaml = ["---", "configs:"]
    for config, splits in configs.items():
        yaml += [f"- config_name: {config}", "  data_files:"]
        yaml += [f"  - split: {s}\n    path: {config}/{s}-*" for s in splits]
    (root / "README.md").write_text("\n".join(yaml + ["---", "", "Local copy for tests.", ""]))
    return root


def make_tokenizer():
    """A word-level BERT WordPiece tokenizer covering the fixture's text (plus a few subwords)."""
    from convbert.data.tokenizer import bert_wordpiece

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens = [*specials, *WORDS, ".", '"', "'", "`", "quoted", "##s", "##ed"]
    return bert_wordpiece({t: i for i, t in enumerate(dict.fromkeys(tokens))})


def write_pretrained_run_dir(root: Path, seed: int = 0, **config_overrides) -> Path:
    """A stand-in for a pretraining run dir: hf/ (tiny ConvBERT, transformers format), tokenizer.json,
    vocab.txt and pretrain_summary.json."""
    import json

    import torch

    from convbert.config import ConvBertConfig
    from convbert.data.tokenizer import save
    from convbert.model import ConvBertModel

    root.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer()
    save(tok, root)
    torch.manual_seed(seed)
    config = ConvBertConfig.from_preset("tiny", vocab_size=tok.get_vocab_size(), **config_overrides)
    ConvBertModel(config).to_hf(root / "hf")
    summary = {"tokens": 123456, "flops": 1.5e12, "device_hours": 0.01, "device": "cpu (2 threads)"}
    (root / "pretrain_summary.json").write_text(json.dumps(summary))
    return root


def write_rte_finetune_env(root: Path, n_train: int) -> Path:
    """An RTE fixture (n_train training pairs, original layout under root/glue) and a tiny pretraining run
    dir (root/pretrain): what a fine-tuning job needs."""
    write_glue_dir(root / "glue", make_benchmark(n_train=n_train, n_dev=8, n_test=4), tasks=["rte"])
    write_pretrained_run_dir(root / "pretrain")
    return root
