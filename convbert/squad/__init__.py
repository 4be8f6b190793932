"""SQuAD 1.1 / 2.0: loading, question+context windows, span post-processing, official-rule scoring.

The scorer (convbert.squad.scoring) is not imported here: `python -m convbert.squad.scoring` runs it as a script,
which must not already be in sys.modules.
"""

from .data import Answer, LoadReport, SquadExample, gold_answers, load_squad, load_squad_json
from .features import FeatureConfig, FeatureReport, SquadFeatures, build_features
from .postprocess import PostprocessConfig, Predictions, postprocess

__all__ = [
    "Answer", "LoadReport", "SquadExample", "gold_answers", "load_squad", "load_squad_json",
    "FeatureConfig", "FeatureReport", "SquadFeatures", "build_features",
    "PostprocessConfig", "Predictions", "postprocess",
]
