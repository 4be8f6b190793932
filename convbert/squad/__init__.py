"""SQuAD 1.1 / 2.0: loading, question+context windows, span post-processing, official-rule scoring."""

from .data import Answer, LoadReport, SquadExample, gold_answers, load_squad, load_squad_json
from .features import FeatureConfig, FeatureReport, SquadFeatures, build_features
from .postprocess import PostprocessConfig, Predictions, postprocess
from .scoring import normalize_answer, score_squad_v1, score_squad_v2

__all__ = [
    "Answer", "LoadReport", "SquadExample", "gold_answers", "load_squad", "load_squad_json",
    "FeatureConfig", "FeatureReport", "SquadFeatures", "build_features",
    "PostprocessConfig", "Predictions", "postprocess",
    "normalize_answer", "score_squad_v1", "score_squad_v2",
]
