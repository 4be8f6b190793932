"""Training engine shared by pretraining and fine-tuning (no Hydra in here)."""

from convbert.train.checkpoint import find_latest, list_checkpoints, load_checkpoint, save_checkpoint
from convbert.train.dist import DistInfo, all_reduce_sum, barrier, cleanup, init_distributed
from convbert.train.optim import build_optimizer, layer_lr_scale, linear_schedule, param_groups
from convbert.train.precision import Precision
from convbert.train.runinfo import device_name, git_revision
from convbert.train.tracking import Tracker, keep_metrics_until, read_metrics

__all__ = [
    "DistInfo", "Precision", "Tracker", "all_reduce_sum", "barrier", "build_optimizer", "cleanup",
    "device_name", "find_latest", "git_revision", "init_distributed", "keep_metrics_until",
    "layer_lr_scale",
    "linear_schedule", "list_checkpoints", "load_checkpoint", "param_groups", "read_metrics", "save_checkpoint",
]
