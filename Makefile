# Every target runs in the virtual environment VENV, created and installed into on first use and again
# when pyproject.toml changes (the stamp VENV/.installed). PYTHON=... runs another interpreter as it is.
VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
SYSTEM_PYTHON ?= python3
# CPU by default: torch 2.13.0 is a local CPU wheel here. On a GPU machine use `make install TORCH=torch EXTRAS=dev,demo,gpu`.
TORCH ?= torch==2.13.0
EXTRAS ?= dev,demo
# The install stamp, or nothing when PYTHON was given (on the command line or in the environment).
INSTALLED := $(if $(filter file,$(origin PYTHON)),$(VENV)/.installed)

# The embedded default (`make train`): each stage reuses its finished output. Its fixed parts, the pretrained
# tiny backbone and the evaluators, are shipped in the repository (release.json in each, docs/training.md);
# `make backbone` and `make evaluators` rebuild them into REBUILT and compare them with the shipped ones.
DATA ?= data/synthetic
FACES ?= 3000
SHIPPED_BACKBONE := checkpoints/tiny-flux
SHIPPED_EVALUATORS := checkpoints/evaluators/synthetic
REBUILT ?= checkpoints/rebuilt
BACKBONE ?= $(SHIPPED_BACKBONE)
BACKBONE_CONFIG ?= experiments/configs/backbone_tiny.yaml
# stage 1's key=value overrides, e.g. BACKBONE_ARGS="flux.steps=1000 logger.kind=csv"
BACKBONE_ARGS ?=
EVALUATORS ?= $(SHIPPED_EVALUATORS)
# The paper protocol's small stand-ins (DINO, clean-fid's Inception, ImageReward; random, seeded)
PAPER_EVALUATORS ?= $(EVALUATORS)/paper
CONFIG ?= experiments/configs/tiny.yaml
EVALUATORS_CONFIG ?= experiments/configs/evaluators_synthetic.yaml
RUN ?= runs/tiny
ARGS ?=
EVAL_N ?= 120
# text (the mask dropped here) and text+mask; EVAL_MODES=text,mask,text+mask adds the paper's mask-only mode,
# left out for make train's time (docs/tuning-log.md)
EVAL_MODES ?= text,text+mask
# faces sampled at once: 16 is faster than 8 on 2 cores and gives the same table (docs/tuning-log.md)
EVAL_BATCH ?= 16
# The ablation study (`make ablate`): every variant x seed trained for ABLATE_STEPS steps, the default's own
# budget, on three seeds for confidence intervals (docs/ablation.md, for its wall time).
ABLATE_RUNS ?= runs/ablate
ABLATE_OUT ?= results/ablation
ABLATE_STEPS ?= 1500
ABLATE_SEEDS ?= 0,1,2
# runs at once, each with cores / ABLATE_WORKERS torch threads: on 2 cores two one-thread runs beat one of two
ABLATE_WORKERS ?= 2

# The demo's address (`make demo`)
DEMO_HOST ?= 127.0.0.1
DEMO_PORT ?= 7860

.PHONY: install test test-slow test-slurm lint format benchmark data backbone evaluators train ablate demo

define install_packages
	$(PYTHON) -m pip install "$(TORCH)"
	$(PYTHON) -m pip install -e ".[$(EXTRAS)]"
endef

$(VENV)/bin/python:
	$(SYSTEM_PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(install_packages)
	touch $@

# Installs whether or not the stamp is current, e.g. after changing TORCH or EXTRAS.
install: $(if $(INSTALLED),| $(VENV)/bin/python)
	$(install_packages)
	$(if $(INSTALLED),touch $(INSTALLED))

test: $(INSTALLED)
	$(PYTHON) -m pytest -q

# The slow tests but the SLURM ones (`make test-slurm`): multi-process training and evaluation, the paper's
# config on the FLUX.1-dev-shaped backbone.
test-slow: $(INSTALLED)
	$(PYTHON) -m pytest -q -m "slow and not slurm"

# A one-node SLURM cluster on loopback (installs slurm-wlm and munge with apt-get when root).
test-slurm: $(INSTALLED)
	$(PYTHON) -m pytest -q -m slurm

lint: $(INSTALLED)
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format: $(INSTALLED)
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .

benchmark: $(INSTALLED)
	$(PYTHON) -m experiments.benchmark experts
	$(PYTHON) -m experiments.benchmark data
	$(PYTHON) -m experiments.benchmark sampling

data: $(DATA)/attributes.json
train: $(RUN)/eval/test.json

# Rebuild the shipped parts from the data and say whether they equal the released files (or how far their
# metrics moved); `make train BACKBONE=$(REBUILT)/tiny-flux EVALUATORS=$(REBUILT)/evaluators` uses them.
backbone: $(REBUILT)/tiny-flux/model_index.json
	$(PYTHON) -m experiments.release compare $(SHIPPED_BACKBONE) $(REBUILT)/tiny-flux
evaluators: $(REBUILT)/evaluators/report.json $(REBUILT)/evaluators/paper/manifest.json
	$(PYTHON) -m experiments.release compare $(SHIPPED_EVALUATORS) $(REBUILT)/evaluators

# The stages wait for the install without being redone when it is (order-only). A backbone or evaluator set
# is made only when it is not there: the shipped ones are, whatever the data's age (order-only too).
$(DATA)/attributes.json: | $(INSTALLED)
	$(PYTHON) -m data_modules.synthetic --out $(DATA) --n $(FACES) --size 64 --seed 0

$(sort $(BACKBONE)/model_index.json $(REBUILT)/tiny-flux/model_index.json): | $(DATA)/attributes.json
	$(PYTHON) -m experiments.pretrain_backbone --config $(BACKBONE_CONFIG) data=$(DATA) out=$(@D) $(BACKBONE_ARGS)

$(sort $(EVALUATORS)/report.json $(REBUILT)/evaluators/report.json): | $(DATA)/attributes.json
	$(PYTHON) -m experiments.train_evaluators --config $(EVALUATORS_CONFIG) run_dir=$(@D) data.root=$(DATA)

$(sort $(PAPER_EVALUATORS)/manifest.json $(REBUILT)/evaluators/paper/manifest.json): | $(INSTALLED)
	$(PYTHON) -m experiments.paper_evaluators --out $(@D)

$(RUN)/export/config.yaml: $(DATA)/attributes.json | $(BACKBONE)/model_index.json $(EVALUATORS)/report.json
	$(PYTHON) -m experiments.train --config $(CONFIG) run_dir=$(RUN) backbone.path=$(BACKBONE) data.root=$(DATA) \
		eval.evaluators.clip_path=$(EVALUATORS)/clip eval.evaluators.parser_path=$(EVALUATORS)/parser $(ARGS)

# Our metrics and, beside them, the paper's (--protocol paper); its CLIP columns use the trained small CLIP.
$(RUN)/eval/test.json: $(RUN)/export/config.yaml | $(EVALUATORS)/report.json $(PAPER_EVALUATORS)/manifest.json
	$(PYTHON) -m experiments.evaluate --run $(RUN) --split test --n $(EVAL_N) --modes $(EVAL_MODES) --batch-size $(EVAL_BATCH) \
		--clip $(EVALUATORS)/clip --parser $(EVALUATORS)/parser --protocol paper \
		--inception-torchscript $(PAPER_EVALUATORS)/inception-2015-12-05.pt --dino $(PAPER_EVALUATORS)/dino \
		--image-reward $(PAPER_EVALUATORS)/image_reward --cmmd-clip $(EVALUATORS)/clip --text-clip $(EVALUATORS)/clip

# The interactive demo of the run (trains it first when there is none); the run's config names its parser.
demo: $(RUN)/export/config.yaml | $(INSTALLED)
	$(PYTHON) -m experiments.demo --run $(RUN) --host $(DEMO_HOST) --port $(DEMO_PORT)

# Resumable: finished stages are skipped, an interrupted run continues from its last checkpoint.
ablate: $(DATA)/attributes.json | $(BACKBONE)/model_index.json $(EVALUATORS)/report.json $(INSTALLED)
	$(PYTHON) -m experiments.ablate_gating --config $(CONFIG) --steps $(ABLATE_STEPS) --seeds $(ABLATE_SEEDS) \
		--workers $(ABLATE_WORKERS) --n $(EVAL_N) --runs $(ABLATE_RUNS) --out $(ABLATE_OUT) backbone.path=$(BACKBONE) data.root=$(DATA) \
		eval.evaluators.clip_path=$(EVALUATORS)/clip eval.evaluators.parser_path=$(EVALUATORS)/parser $(ARGS)
