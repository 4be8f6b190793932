# ConvBERT pipeline. `make help` lists the targets; every target sets up .venv on first use.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=
EXPERIMENT ?=
GLUE_DIR ?=
INIT ?= runs/pretrain/tiny-mixed-pydocs# checkpoint to fine-tune: what `make pretrain` writes by default
SEEDS ?= 1,2,3
TASKS ?= cola,sst2,mrpc,stsb,qqp,mnli,qnli,rte

.DEFAULT_GOAL := help
.PHONY: help venv test lint data pretrain glue squad table reproduce bench bench-model bench-data bench-finetune gpu-check clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'
	@echo "  Pass Hydra overrides with ARGS='...', e.g. make pretrain ARGS='model=small trainer.max_steps=1000'"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP) ## create .venv and install the project with its dev tools

test: $(STAMP) ## run the test suite
	WANDB_MODE=disabled $(PY) -m pytest tests

lint: $(STAMP) ## ruff
	$(VENV)/bin/ruff check .

data: $(STAMP) ## tokenize the corpus into pretraining shards (default: embedded pydocs corpus)
	$(PY) -m pipelines.prepare $(ARGS)

pretrain: $(STAMP) ## ELECTRA-style pretraining (default: tiny ConvBERT on pydocs, CPU, ~12 min on 2 cores)
	$(PY) -m pipelines.pretrain $(if $(EXPERIMENT),experiment=$(EXPERIMENT)) $(ARGS)

glue: $(STAMP) ## fine-tune INIT=<checkpoint> on every GLUE task x seed as one Hydra multirun (GLUE_DIR=... local copy)
	$(PY) -m pipelines.finetune -m task=$(TASKS) seed=$(SEEDS) init=$(INIT) $(if $(GLUE_DIR),glue_dir=$(GLUE_DIR)) $(ARGS)

squad: $(STAMP) ## fine-tune INIT=<checkpoint> on SQuAD 1.1 and 2.0
	$(PY) -m pipelines.finetune -m task=squad1,squad2 init=$(INIT) $(ARGS)

table: $(STAMP) ## aggregate runs/**/results.json into the score table
	$(PY) -m pipelines.table $(ARGS)

reproduce: $(STAMP) ## tokenize -> pretrain -> GLUE sweep -> table for EXPERIMENT=<name>
	$(PY) -m pipelines.reproduce $(if $(EXPERIMENT),pretrain_experiment=$(EXPERIMENT)) $(if $(GLUE_DIR),glue_dir=$(GLUE_DIR)) $(ARGS)

bench: $(STAMP) ## one ELECTRA training step: ours (eager, compiled) vs transformers (tokens/s, utilisation, memory)
	$(PY) tests/benchmarks/bench_pretrain.py $(ARGS)

gpu-check: $(STAMP) ## GPU readiness: bf16 step eager/compiled (tokens/s, MFU, host syncs), fp16, 2-GPU DDP, fine-tune
	$(PY) tests/benchmarks/gpu_check.py $(ARGS)

bench-model: $(STAMP) ## encoder forward+backward tokens/s: ours vs transformers
	$(PY) tests/benchmarks/bench_model.py $(ARGS)

bench-data: $(STAMP) ## raw text -> shards MB/s vs raw tokenizers encode_batch
	$(PY) tests/benchmarks/bench_data.py $(ARGS)

bench-finetune: $(STAMP) ## fine-tuning examples/s on SST-2-shaped data: ours vs transformers
	$(PY) tests/benchmarks/bench_finetune.py $(ARGS)

clean: ## remove caches (keeps data/ and runs/)
	rm -rf .pytest_cache .ruff_cache outputs multirun
