# ConvBERT pipeline. `make help` lists the targets; every target sets up .venv on first use.
# Variables (override on the command line: make glue INIT=runs/pretrain/my-run SEEDS=1,2). `make help`
# prints each one from its `##` note, with its current value.
PYTHON ?= python3## interpreter that creates .venv
TORCH ?= torch==2.13.0## torch requirement installed into .venv (e.g. a CUDA wheel index spec)
ARGS ?=## extra Hydra overrides for the stage, e.g. ARGS='trainer.max_steps=1000'
EXPERIMENT ?=## conf/experiment/<name> for pretrain and reproduce, e.g. convbert-small
GLUE_DIR ?=## local GLUE directory (original layout); empty: the HF hub
INIT ?= runs/pretrain/tiny-mixed-pydocs## checkpoint to fine-tune (make curve: the pretraining run); default: what `make pretrain` writes
SEEDS ?= 1,2,3## fine-tuning seeds (make glue, make curve)
TASKS ?= cola,sst2,mrpc,stsb,qqp,mnli,qnli,rte## GLUE tasks (make glue, make curve)
TASK ?= rte## the task `make search` tunes
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HELP_VARS := PYTHON TORCH ARGS EXPERIMENT GLUE_DIR INIT SEEDS TASKS TASK

.DEFAULT_GOAL := help
.PHONY: help venv test test-fast lint data pretrain glue search squad baselines curve table reproduce bench bench-model bench-data bench-finetune gpu-check clean

help: ## list the targets and the variables
	@echo "Targets:"
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'
	@echo "Variables (make <target> NAME=value):"
	@$(foreach v,$(HELP_VARS),printf "  %-16s %s\n  %-16s   default: %s\n" "$(v)" "$$(grep -E '^$(v) \?=' $(firstword $(MAKEFILE_LIST)) | sed 's/.*## //')" "" "$(if $(value $(v)),$(value $(v)),(empty))";)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP) ## create .venv and install the project with its dev tools

test: $(STAMP) ## run the whole test suite (what CI runs; 2 pytest-xdist workers)
	WANDB_MODE=disabled $(PY) -m pytest -n 2 --maxschedchunk 1 tests

test-fast: $(STAMP) ## the tests not marked slow (no end-to-end runs), for the edit-test loop
	WANDB_MODE=disabled $(PY) -m pytest -n 2 --maxschedchunk 1 -m "not slow" tests

lint: $(STAMP) ## ruff
	$(VENV)/bin/ruff check .

data: $(STAMP) ## tokenize the corpus into pretraining shards (default: embedded pydocs corpus)
	$(PY) -m pipelines.prepare $(ARGS)

pretrain: $(STAMP) ## ELECTRA-style pretraining (default: tiny ConvBERT on pydocs, CPU, 12-19 min on 2 cores, by machine)
	$(PY) -m pipelines.pretrain $(if $(EXPERIMENT),experiment=$(EXPERIMENT)) $(ARGS)

glue: $(STAMP) ## fine-tune INIT=<checkpoint> on every GLUE task x seed as one Hydra multirun (GLUE_DIR=... local copy)
	$(PY) -m pipelines.finetune -m task=$(TASKS) seed=$(SEEDS) init=$(INIT) $(if $(GLUE_DIR),data.dir=$(GLUE_DIR)) $(ARGS)

search: $(STAMP) ## Optuna lr/epochs/layer-decay search for TASK=<task> on INIT (conf/hparams_search/glue_lr; dev-selected)
	$(PY) -m pipelines.finetune -m hparams_search=glue_lr task=$(TASK) init=$(INIT) $(if $(GLUE_DIR),data.dir=$(GLUE_DIR)) $(ARGS)

squad: $(STAMP) ## fine-tune INIT=<checkpoint> on SQuAD 1.1 and 2.0
	$(PY) -m pipelines.finetune -m task=squad1,squad2 init=$(INIT) $(ARGS)

baselines: $(STAMP) ## majority-class and bag-of-words reference rows for TASKS on GLUE_DIR (make table adds them itself)
	$(PY) -m pipelines.baselines tasks=[$(TASKS)] $(if $(GLUE_DIR),data.dir=$(GLUE_DIR)) $(ARGS)

curve: $(STAMP) ## fine-tune every checkpoint INIT=<run> kept (trainer.keep_steps) on TASKS x SEEDS: curve.csv/png
	$(PY) -m pipelines.curve init=$(INIT) tasks=[$(TASKS)] seeds=[$(SEEDS)] $(if $(GLUE_DIR),data.dir=$(GLUE_DIR)) $(ARGS)

table: $(STAMP) ## aggregate runs/**/results.json into the score table
	$(PY) -m pipelines.table $(ARGS)

reproduce: $(STAMP) ## tokenize -> pretrain -> GLUE sweep -> one table for EXPERIMENT=<name>[,<name>...]
	$(PY) -m pipelines.reproduce $(if $(EXPERIMENT),experiments=[$(EXPERIMENT)]) $(if $(GLUE_DIR),data.dir=$(GLUE_DIR)) $(ARGS)

bench: $(STAMP) ## one ELECTRA training step: ours (eager, compiled) vs transformers (tokens/s, utilisation, memory)
	$(PY) benchmarks/bench_pretrain.py $(ARGS)

gpu-check: $(STAMP) ## GPU readiness: conv kernels, bf16 step eager/compiled/graphed (tokens/s, MFU, syncs), fp16, DDP, fine-tune, real run
	$(PY) benchmarks/gpu_check.py $(ARGS)

bench-model: $(STAMP) ## encoder forward+backward tokens/s: ours vs transformers
	$(PY) benchmarks/bench_model.py $(ARGS)

bench-data: $(STAMP) ## raw text -> shards MB/s vs raw tokenizers encode_batch
	$(PY) benchmarks/bench_data.py $(ARGS)

bench-finetune: $(STAMP) ## fine-tuning examples/s on SST-2-shaped data: ours vs transformers
	$(PY) benchmarks/bench_finetune.py $(ARGS)

clean: ## remove caches (keeps data/ and runs/)
	rm -rf .pytest_cache .ruff_cache outputs multirun
