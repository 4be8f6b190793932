"""Score aggregation: results.json files -> paper-style GLUE/SQuAD table (Markdown, CSV, LaTeX, PNG)."""

from convbert.report.aggregate import (
    AVERAGES,
    Average,
    Cell,
    Compute,
    Row,
    Stats,
    Table,
    aggregate,
    glue_averages,
)
from convbert.report.collect import collect, find_results, load_result, scan
from convbert.report.compare import Comparison, Difference, compare
from convbert.report.reference import REFERENCE_FILE, load_references
from convbert.report.schema import ModelInfo, ModelKey, Pretraining, ReportError, Result, parse_result
from convbert.report.writers import (
    comparison_csv,
    runs_csv,
    scores_csv,
    table_csv,
    to_latex,
    to_markdown,
    write_outputs,
)

__all__ = [
    "AVERAGES", "Average", "Cell", "Comparison", "Compute", "Difference", "ModelInfo", "ModelKey",
    "Pretraining", "REFERENCE_FILE", "ReportError", "Result", "Row", "Stats", "Table", "aggregate", "collect",
    "compare", "comparison_csv", "find_results", "glue_averages", "load_references", "load_result",
    "parse_result", "runs_csv", "scan", "scores_csv", "table_csv", "to_latex", "to_markdown", "write_outputs",
]
