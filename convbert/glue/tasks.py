"""Where each GLUE task's data lives (HF hub and original GLUE directory), its labels and leaderboard files
(docs/design.md §5). Metrics come from the task registry, convbert/tasks.py, as do the recipe's epochs and
pair swapping, which the fine-tuning config fills in."""

from __future__ import annotations

from dataclasses import dataclass, field

from convbert.tasks import ELECTRA_TASKS, GLUE_TASKS, task_info

__all__ = ["DIR_FILES", "ELECTRA_TASKS", "GLUE_TASKS", "HUB_DATASET", "TASKS", "GlueTask", "SplitSource", "get_task"]

HUB_DATASET = "nyu-mll/glue"

# Our split names follow the hub; in an original GLUE directory they are these files.
DIR_FILES = {
    "train": "train.tsv",
    "validation": "dev.tsv",
    "test": "test.tsv",
    "validation_matched": "dev_matched.tsv",
    "validation_mismatched": "dev_mismatched.tsv",
    "test_matched": "test_matched.tsv",
    "test_mismatched": "test_mismatched.tsv",
}


@dataclass(frozen=True)
class SplitSource:
    """One split in both sources: hub (config, split) and a path relative to the GLUE directory."""

    hub_config: str
    hub_split: str
    dir_path: str  # e.g. "MNLI/dev_matched.tsv"
    optional: bool = False  # AX: predicted only when present


@dataclass(frozen=True)
class GlueTask:
    name: str  # our key == hub config
    dir_name: str  # folder in the original distribution
    hub_columns: tuple[str, str | None]  # text columns on the hub (segment A, segment B)
    dir_columns: tuple[str, str | None]  # the same columns' header names in the TSV files
    dir_label: str  # label column name in train/dev TSVs
    label_names: tuple[str, ...] | None  # hub class names by index; None = regression (STS-B)
    file_labels: tuple[str, ...] | None  # label strings in the TSVs == leaderboard strings, by index
    dev_splits: tuple[str, ...] = ("validation",)
    test_splits: tuple[str, ...] = ("test",)
    submission_files: dict[str, str] = field(default_factory=dict)  # test split -> leaderboard file
    dir_id: str = "index"  # id column of the test TSV
    headerless: tuple[str, ...] | None = None  # column names of header-less train/dev files (CoLA)
    skip_malformed: bool = False  # QQP: known bad lines are skipped and counted, not fatal
    extra_splits: dict[str, SplitSource] = field(default_factory=dict)

    @property
    def metrics(self) -> tuple[str, ...]:
        """Reported metric names (results.json keys; MNLI's carry _m/_mm)."""
        return task_info(self.name).metrics

    @property
    def is_regression(self) -> bool:
        return self.label_names is None

    @property
    def num_labels(self) -> int:
        return 1 if self.label_names is None else len(self.label_names)

    @property
    def is_pair(self) -> bool:
        return self.hub_columns[1] is not None

    @property
    def primary_metric(self) -> str:
        """The one number per task in ELECTRA's GLUE average (CoLA MCC, STS-B Spearman, else accuracy)."""
        return task_info(self.name).main_metric

    def metric_suffix(self, split: str) -> str:
        return {"validation_matched": "_m", "validation_mismatched": "_mm"}.get(split, "")

    def source(self, split: str) -> SplitSource:
        if split in self.extra_splits:
            return self.extra_splits[split]
        if split not in ("train", *self.dev_splits, *self.test_splits):
            known = ", ".join(["train", *self.dev_splits, *self.test_splits])
            raise KeyError(f"GLUE task {self.name!r} has no split {split!r} (splits: {known})")
        return SplitSource(self.name, split, f"{self.dir_name}/{DIR_FILES[split]}")


_BIN = ("0", "1")
_NLI2 = ("entailment", "not_entailment")

TASKS: dict[str, GlueTask] = {
    t.name: t
    for t in [
        GlueTask(
            "cola", "CoLA", ("sentence", None), ("sentence", None), "label",
            ("unacceptable", "acceptable"), _BIN,
            submission_files={"test": "CoLA.tsv"},
            headerless=("source", "label", "original_label", "sentence"),
        ),
        GlueTask(
            "sst2", "SST-2", ("sentence", None), ("sentence", None), "label",
            ("negative", "positive"), _BIN, submission_files={"test": "SST-2.tsv"},
        ),
        GlueTask(
            "mrpc", "MRPC", ("sentence1", "sentence2"), ("#1 String", "#2 String"), "Quality",
            ("not_equivalent", "equivalent"), _BIN, submission_files={"test": "MRPC.tsv"},
        ),
        GlueTask(
            "stsb", "STS-B", ("sentence1", "sentence2"), ("sentence1", "sentence2"), "score",
            None, None, submission_files={"test": "STS-B.tsv"},
        ),
        GlueTask(
            "qqp", "QQP", ("question1", "question2"), ("question1", "question2"), "is_duplicate",
            ("not_duplicate", "duplicate"), _BIN, submission_files={"test": "QQP.tsv"},
            dir_id="id", skip_malformed=True,
        ),
        GlueTask(
            "mnli", "MNLI", ("premise", "hypothesis"), ("sentence1", "sentence2"), "gold_label",
            ("entailment", "neutral", "contradiction"), ("entailment", "neutral", "contradiction"),
            dev_splits=("validation_matched", "validation_mismatched"),
            test_splits=("test_matched", "test_mismatched", "ax"),
            submission_files={"test_matched": "MNLI-m.tsv", "test_mismatched": "MNLI-mm.tsv", "ax": "AX.tsv"},
            # the diagnostic set is scored with the MNLI model; hub config "ax", GLUE dir "diagnostic/"
            extra_splits={"ax": SplitSource("ax", "test", "diagnostic/diagnostic.tsv", optional=True)},
        ),
        GlueTask(
            "qnli", "QNLI", ("question", "sentence"), ("question", "sentence"), "label",
            _NLI2, _NLI2, submission_files={"test": "QNLI.tsv"},
        ),
        GlueTask(
            "rte", "RTE", ("sentence1", "sentence2"), ("sentence1", "sentence2"), "label",
            _NLI2, _NLI2, submission_files={"test": "RTE.tsv"},
        ),
        # WNLI's label order is the reverse of RTE's: 1 means entailment (hub and files agree).
        GlueTask(
            "wnli", "WNLI", ("sentence1", "sentence2"), ("sentence1", "sentence2"), "label",
            ("not_entailment", "entailment"), _BIN, submission_files={"test": "WNLI.tsv"},
        ),
    ]
}


def get_task(name: str) -> GlueTask:
    key = name.lower().replace("-", "")
    if key not in TASKS:
        raise KeyError(f"unknown GLUE task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[key]
