# The two commands of the README. Both (re)create .venv/ through tools/setup_env.sh first.
REPO := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
PY := $(REPO)/.venv/bin/python

.PHONY: setup demo test test-all bench bench-det bench-classification

setup:
	bash $(REPO)/tools/setup_env.sh

demo: setup
	cd $(REPO) && $(PY) tools/demo.py

test: setup
	cd $(REPO) && $(PY) -m pytest tests -q

test-all: setup
	cd $(REPO) && $(PY) -m pytest tests -q --run-slow

bench: setup
	cd $(REPO) && $(PY) tools/benchmark_det.py --aff-channels 16 32 64

# The README's detection comparison: the demo teacher once, each student method with seeds 0 1 2 (resumable stage
# by stage; mean +- std and paired 95% intervals to the plain student), then one ROI-logit CDF figure of
# seed 0 (tools/analyze_det.py, on the configs the demo wrote next to each stage's weights).
BENCH_DET := output/bench-det
BENCH_DET_METHODS := student kd dkd fitnet reviewkd unikd
bench-det: setup
	cd $(REPO) && $(PY) tools/demo.py --part detection --seeds 0 1 2 --det-methods $(BENCH_DET_METHODS) \
		--output-dir $(BENCH_DET)
	cd $(REPO) && $(PY) tools/analyze_det.py --output $(BENCH_DET)/analyze_det \
		--config-file $(foreach m,$(BENCH_DET_METHODS),$(BENCH_DET)/seed0/$(m)/config.yaml) \
		--weights $(foreach m,$(BENCH_DET_METHODS),$(BENCH_DET)/seed0/$(m)/model_final.pth) \
		--labels $(BENCH_DET_METHODS) \
		DISTILL.TEACHER.CONFIG configs/Demo/teacher-R18.yaml DISTILL.TEACHER.WEIGHTS $(BENCH_DET)/teacher/model_final.pth

bench-classification: setup
	cd $(REPO) && $(PY) -m classification bench --speed --steps 6 --rounds 3
