# wattserve — the user's verbs. Each target sets up .venv on first use (idempotent).
#   make bench      CONFIG=cpu MODEL=tiny REPS=1 …   run the benchmark, print a comparison table
#   make test                                        the test suite
#   make models     MODEL=… CONFIG=…                 prepare (export) model artifacts ahead of time
#   make serve      CONFIG=onnx-cpu MODEL=tiny       serve one configuration on 127.0.0.1:8000
#   make equivalence MODEL=tiny CONFIG=cpu           compare every engine's tokens with torch
#   make benchmark-serving                           per-engine latency / HTTP overhead table
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PYTHONPATH := $(CURDIR)

CONFIG ?= cpu
MODEL ?= tiny
export CONFIG MODEL REPS WARMUP COOLDOWN PROMPTS RESULTS RUNNER

.PHONY: venv test bench models serve equivalence benchmark-serving clean-venv

$(STAMP): requirements.txt constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
	@touch $@

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

models: $(STAMP)
	$(PY) -m services.models.prepare --model "$(MODEL)" --config "$(CONFIG)"

serve: $(STAMP)
	$(PY) -m services.inference --config "$(if $(filter cpu cuda all,$(CONFIG)),torch-cpu,$(CONFIG))" --model "$(MODEL)"

equivalence: $(STAMP)
	$(PY) -m services.inference.equivalence --model "$(MODEL)" --configs "$(CONFIG)"

benchmark-serving: $(STAMP)
	$(PY) benchmarks/serving.py

clean-venv:
	rm -rf $(VENV)
