# wattserve — the user's verbs. Each target sets up .venv on first use (idempotent).
#   make bench      CONFIG=cpu MODEL=tiny REPS=1 …   run the benchmark, print a comparison table
#                   [PRECISION=fp32|bf16|fp16|int8|int4|fp32,int8]   each configuration at each precision
#                   [CPU_SENSOR=… GPU_SENSOR=… WALL_METER=… TDP_WATTS=… IDLE_WATTS=…]   which sensors
#   make test                                        the test suite
#   (CONFIG=<x>-cuda, cuda or all: everything runs in .venv-cuda, the CUDA requirement set; no GPU -> exit 2)
#   make gpu-check  [GPU_CHECK_ARGS=--dry-run]       the device check: CUDA configs, providers, tokens, NVML
#   make study      SPEC=studies/smoke.yaml [STUDY_ARGS=--dry-run]   a whole study: randomized, resumable
#   make prompts    SEED=1 OUT=file.jsonl            a new seeded prompt set from HumanEval (the study's method)
#   make models     MODEL=… CONFIG=…                 prepare (export) model artifacts ahead of time
#   make serve      CONFIG=onnx-cpu MODEL=tiny       serve one configuration on 127.0.0.1:8000
#   make equivalence MODEL=tiny CONFIG=cpu [PRECISION=int8]   compare every engine's tokens with torch fp32
#   make llamacpp                                    opt-in: build + install llama-cpp-python for llamacpp-cpu (minutes)
#   make score      COMPLETIONS=file.jsonl [SCORE_ARGS=…]   pass@1 of {task_id, completion} lines, sandboxed
#   make analyze    [RESULTS=results] [TABLE=x.csv] [OUT=dir] [TIMESERIES=run-id]   tables, tests, figures, report
#                   [STUDY=a,b] [MODEL=a,b] [CONFIG=a,b] [RUNS=id,id]   only those runs (prints what it took)
#   make images     [CONFIG=…]                       the Docker images (CPU; CUDA too if CONFIG names one)
#   make up         CONFIG=onnx-cpu MODEL=tiny       the Dockerized stack (Grafana on 127.0.0.1:3000 only; WATTSERVE_EXPOSE=1: + :8000, :9090)
#   make down                                        stop it (the model cache volume is kept)
#   make dashboards                                  regenerate grafana/dashboards/*.json (grafanalib)
#   make benchmark-serving [SERVING_ARGS=...]        per-engine latency / per-request overhead table
#   make benchmark-analysis                          times `make analyze` on a study-scale synthetic tree
#   make benchmark-roofline [MODEL=… CONFIG=… PRECISION=… ROOFLINE_ARGS=…]   decode tok/s vs memory bandwidth
#   make overhead                                    CPU share of the local exporters + sampler
SHELL := /bin/bash
PYTHON ?= python3
export PYTHONPATH := $(CURDIR)
comma := ,

CONFIG ?= cpu
# A CONFIG naming a CUDA configuration (x-cuda, cuda, all) runs in .venv-cuda: the CUDA requirement set
# (images/requirements.py cuda: onnxruntime-gpu, never the CPU onnxruntime; pinned by
# images/constraints-cuda.txt). Checked first: no NVIDIA GPU here -> exit 2 before anything is installed.
CUDA_VENV ?= .venv-cuda
CUDA_CONSTRAINTS ?= images/constraints-cuda.txt
CUDA_SELECTED := $(filter %-cuda cuda all,$(subst @, ,$(subst $(comma), ,$(CONFIG))))
ifneq ($(CUDA_SELECTED),)
VENV := $(CUDA_VENV)
PY := $(VENV)/bin/python
STAMP := cuda-host $(VENV)/.installed
else
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
endif
MODEL ?= tiny
export CONFIG PRECISION MODEL REPS WARMUP COOLDOWN PROMPTS RESULTS RUNNER PRESET SCORE_ISOLATION
# sensors of `make bench` (python -m loadgen.bench --help): CPU_SENSOR=auto|rapl|energibridge|estimate,
# GPU_SENSOR=auto|nvml|nvidia-smi|dcgm=<URL>|none, WALL_METER=auto|none|<netio.json URL>, TDP_WATTS, IDLE_WATTS,
# ENERGIBRIDGE_BIN; NETIO credentials only in the environment (NETIO_USER, NETIO_PASSWORD)
export CPU_SENSOR GPU_SENSOR WALL_METER TDP_WATTS IDLE_WATTS ENERGIBRIDGE_BIN

.PHONY: venv venv-cuda test bench study prompts models serve equivalence score analyze benchmark-serving benchmark-analysis benchmark-roofline overhead clean-venv

.venv/.installed: requirements.txt constraints.txt requirements-dev.txt constraints-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt \
	  -c constraints.txt -c constraints-dev.txt
	@touch $@

.PHONY: cuda-host
cuda-host:
	@scripts/require-gpu.sh "$(CONFIG)"
	@echo "CONFIG=$(CONFIG) names a CUDA configuration: using $(CUDA_VENV) (images/requirements.py cuda, $(CUDA_CONSTRAINTS))"

$(CUDA_VENV)/.installed: requirements.txt images/requirements.py $(CUDA_CONSTRAINTS) requirements-dev.txt constraints-dev.txt | cuda-host
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PYTHON) images/requirements.py cuda requirements.txt > $(VENV)/requirements-cuda.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r $(VENV)/requirements-cuda.txt -r requirements-dev.txt \
	  -c $(CUDA_CONSTRAINTS) -c constraints-dev.txt
	$(PY) scripts/check-cuda-venv.py
	@touch $@

venv: $(STAMP)
# opt-in: llama-cpp-python (built from its sdist: cmake + g++, minutes) and llama.cpp's GGUF converter, for llamacpp-cpu
.PHONY: llamacpp
llamacpp: $(STAMP)
	scripts/install-llamacpp.sh install $(PY)
venv-cuda:
	$(MAKE) venv CONFIG=cuda

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m loadgen.bench $(BENCH_ARGS)

study: $(STAMP)
	@test -n "$(SPEC)" || { echo "usage: make study SPEC=studies/<name>.yaml (shipped: $$(ls studies/*.yaml | tr '\n' ' '))" >&2; exit 2; }
	$(PY) -m loadgen.study "$(SPEC)" $(if $(RESULTS),--results "$(RESULTS)") $(STUDY_ARGS)

prompts: $(STAMP)
	$(PY) -m loadgen.generate_prompts --seed "$(SEED)" --out "$(OUT)" $(if $(TOKENIZER),--tokenizer "$(TOKENIZER)")

models: $(STAMP)
	$(PY) -m services.models.prepare --model "$(MODEL)" --config "$(CONFIG)" $(if $(PRECISION),--precision "$(PRECISION)")

serve: $(STAMP)
	$(PY) -m services.inference --config "$(if $(filter cpu cuda all,$(CONFIG)),torch-cpu,$(CONFIG))" --model "$(MODEL)"

equivalence: $(STAMP)
	$(PY) -m services.inference.equivalence --model "$(MODEL)" --configs "$(CONFIG)" $(if $(PRECISION),--precision "$(PRECISION)")

score: $(STAMP)
	@test -n "$(COMPLETIONS)" || { echo "usage: make score COMPLETIONS=file.jsonl [SCORE_ARGS=--unsafe-local-exec] (python -m scoring --help)" >&2; exit 2; }
	$(PY) -m scoring "$(COMPLETIONS)" $(SCORE_ARGS)

# STUDY/MODEL/CONFIG/RUNS select runs only when given on the command line (MODEL and CONFIG have bench
# defaults above, which must not filter an analysis)
analyze: $(STAMP)
	$(PY) -m analysis $(if $(TABLE),--table "$(TABLE)") \
	  $(if $(or $(RESULTS),$(if $(TABLE),,x)),--results "$(or $(RESULTS),results)") \
	  $(if $(OUT),--out "$(OUT)") $(if $(TIMESERIES),--timeseries "$(TIMESERIES)") \
	  $(if $(filter command line,$(origin STUDY)),--study "$(STUDY)") \
	  $(if $(filter command line,$(origin MODEL)),--model "$(MODEL)") \
	  $(if $(filter command line,$(origin CONFIG)),--config "$(CONFIG)") \
	  $(if $(filter command line,$(origin RUNS)),--runs "$(RUNS)") \
	  $(if $(HARDWARE),--hardware "$(HARDWARE)")

benchmark-analysis: $(STAMP)
	$(PY) benchmarks/analysis_scale.py

overhead: $(STAMP)
	$(PY) -m loadgen.exporter_overhead --seconds 30

benchmark-serving: $(STAMP)
	$(PY) benchmarks/serving.py $(SERVING_ARGS)

# defaults: the shape of tiny_starcoder_py, every CPU configuration, every precision each engine declares
# (MODEL and CONFIG have other defaults above: only given on the command line or in the environment do
# they apply here)
GIVEN = $(filter command line environment,$(origin $(1)))
benchmark-roofline: $(STAMP)
	$(PY) benchmarks/roofline.py $(if $(call GIVEN,MODEL),--model "$(MODEL)") \
	  $(if $(call GIVEN,CONFIG),--configs "$(CONFIG)") \
	  $(if $(call GIVEN,PRECISION),--precisions "$(PRECISION)") $(ROOFLINE_ARGS)

DOCKER_FLAVOURS = cpu $(if $(filter %-cuda cuda all,$(subst $(comma), ,$(CONFIG))),cuda)
# the device check (scripts/gpu-check.sh --help); GPU_CHECK_ARGS=--dry-run prints its steps anywhere
.PHONY: gpu-check
gpu-check:
	scripts/gpu-check.sh $(GPU_CHECK_ARGS)

.PHONY: images up down
images:
	scripts/docker/start-dockerd.sh
	scripts/docker/build-base.sh
	scripts/docker/build-images.sh $(DOCKER_FLAVOURS) prometheus

up:
	scripts/docker/start-dockerd.sh
	scripts/docker/compose.sh up

down:
	scripts/docker/compose.sh down

# the Grafana dashboards (grafana/dashboards/*.json) from grafana/boards/ (grafanalib): commit both
.PHONY: dashboards
dashboards: $(STAMP)
	$(PY) grafana/build_dashboards.py

clean-venv:
	rm -rf $(VENV)
