# The two commands of the README. Both (re)create .venv/ through tools/setup_env.sh first.
REPO := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
PY := $(REPO)/.venv/bin/python

.PHONY: setup demo test test-all bench bench-det bench-classification

setup:
	bash $(REPO)/tools/setup_env.sh

# Two processes at one torch thread each share the stages of the two demo grids (tools/demo.py --jobs): one trains
# the detection teacher, the other the plain student and then the classification stages, so both cores stay busy.
demo: setup
	cd $(REPO) && $(PY) tools/demo.py --jobs 2 --threads 1

test: setup
	cd $(REPO) && $(PY) -m pytest tests -q

test-all: setup
	cd $(REPO) && $(PY) -m pytest tests -q --run-slow

bench: setup
	cd $(REPO) && $(PY) tools/benchmark_det.py --aff-channels 16 32 64

# The detection comparison and its UniKD ablation: two grid files (configs/bench/, docs/bench.md) sharing one output
# folder, so the teacher, ROI-KD and UniKD stages train once for both; each student method with seeds 0 1 2, two
# stages at once at one torch thread each (a stage's weights are the same whichever process trains it). Resumable
# stage by stage. Then one ROI-logit CDF figure of seed 0 (tools/analyze_det.py, on the config each stage wrote).
BENCH_DET := output/bench-det
BENCH_DET_GRIDS := configs/bench/det_main.yaml configs/bench/det_unikd_ablation.yaml
BENCH_DET_METHODS := student kd dkd fitnet reviewkd unikd
bench-det: setup
	cd $(REPO) && $(PY) tools/bench_det.py --grid $(BENCH_DET_GRIDS) --jobs 2 --threads 1
	cd $(REPO) && $(PY) tools/analyze_det.py \
		--config-file $(foreach m,$(BENCH_DET_METHODS),$(BENCH_DET)/r18/$(m)/seed0/config.yaml) \
		--weights $(foreach m,$(BENCH_DET_METHODS),$(BENCH_DET)/r18/$(m)/seed0/model_final.pth) \
		--labels $(BENCH_DET_METHODS) --output $(BENCH_DET)/analyze_det \
		DISTILL.TEACHER.CONFIG configs/Demo/teacher-R18.yaml DISTILL.TEACHER.WEIGHTS $(BENCH_DET)/teachers/r18/model_final.pth

bench-classification: setup
	cd $(REPO) && $(PY) -m classification bench --speed --steps 6 --rounds 3
