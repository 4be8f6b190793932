"""ELECTRA-style pretraining: `from convbert.pretrain import run`.

config.py parses the Hydra-composed dict once into typed groups; state.py holds what a run resumes from;
engine.py is the run (setup, the loop, checkpoints, signals, export); evaluate.py the held-out evaluation.
"""

from convbert.pretrain.config import PretrainConfig, PretrainTrainerConfig, parse_config
from convbert.pretrain.engine import ExportError, check_resume_config, check_writable, run
from convbert.train.signals import PREEMPTED_EXIT_CODE, Preempted

__all__ = ["PREEMPTED_EXIT_CODE", "ExportError", "PretrainConfig", "Preempted", "PretrainTrainerConfig",
           "check_resume_config", "check_writable", "parse_config", "run"]
