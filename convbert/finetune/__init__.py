"""Fine-tuning: one job engine for every task kind (no Hydra here).

- `init.py`: the starting point (`load_init`): one of our pretraining run dirs, a transformers-format directory
  (or hub id), or random weights -> backbone, tokenizer, provenance.
- `config.py`: `FinetuneConfig`, the composed conf/finetune.yaml (groups data / model / optim / task / trainer),
  with the old flat spellings mapped to the new ones (and a deprecation warning).
- `fit.py`: the epoch loop (`fit`), which checkpoints at every epoch end and on SIGTERM/SIGUSR1/SIGINT and
  resumes bit-identically.
- `engine.py`: `run_job`, the steps every job shares; a task kind (convbert/glue/run.py, convbert/squad/run.py)
  supplies a `TaskAdapter`: data, model, loss, evaluation and its own output files.
"""

from convbert.finetune.config import (
    DEFAULT_LR,
    FINETUNE_OPTIM,
    LEGACY_KEYS,
    DataConfig,
    FinetuneConfig,
    FinetuneModelConfig,
    FinetuneTrainerConfig,
    init_name,
    is_random_init,
    task_config,
)
from convbert.finetune.engine import (
    JobDone,
    SettingsMismatch,
    TaskAdapter,
    TaskOutput,
    check_job,
    default_lr,
    finished_job,
    record_job,
    run_job,
    task_adapter,
)
from convbert.finetune.fit import (
    FitResult,
    FitState,
    count_flop_params,
    fit,
    forward_flops,
    move,
    predict_batches,
    seed_everything,
)
from convbert.finetune.init import (
    PRETRAIN_SUMMARY_KEYS,
    WEIGHT_FILES,
    InitError,
    Pretrained,
    load_init,
    load_tokenizer,
    match_preset,
    tokenizer_file,
    vocab_id,
)

__all__ = [
    "DEFAULT_LR", "DataConfig", "FINETUNE_OPTIM", "FinetuneConfig", "FinetuneModelConfig", "FinetuneTrainerConfig",
    "FitResult", "FitState", "InitError", "JobDone", "LEGACY_KEYS", "PRETRAIN_SUMMARY_KEYS", "Pretrained",
    "SettingsMismatch", "TaskAdapter", "TaskOutput", "WEIGHT_FILES", "check_job", "count_flop_params", "default_lr",
    "finished_job", "fit", "forward_flops", "init_name", "is_random_init", "load_init", "load_tokenizer",
    "match_preset", "move", "predict_batches", "record_job", "run_job", "seed_everything", "task_adapter",
    "task_config", "tokenizer_file", "vocab_id",
]
