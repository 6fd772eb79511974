# The two commands of the README. Both (re)create .venv/ through tools/setup_env.sh first.
REPO := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
PY := $(REPO)/.venv/bin/python

.PHONY: setup demo test test-all bench bench-det bench-classification

setup:
	bash $(REPO)/tools/setup_env.sh

# Two processes at one torch thread each: one trains the detection teacher and then the UniKD student, the other
# the plain student and then the classification part (tools/demo.py --jobs), so both cores stay busy.
demo: setup
	cd $(REPO) && $(PY) tools/demo.py --jobs 2 --threads 1

test: setup
	cd $(REPO) && $(PY) -m pytest tests -q

test-all: setup
	cd $(REPO) && $(PY) -m pytest tests -q --run-slow

bench: setup
	cd $(REPO) && $(PY) tools/benchmark_det.py --aff-channels 16 32 64

# The README's detection comparison: the demo teacher once, each student method with seeds 0 1 2 (resumable stage
# by stage; mean +- std and paired 95% intervals to the plain student), then one ROI-logit CDF figure of
# seed 0 (tools/analyze_det.py, on the configs the demo wrote next to each stage's weights). Two stages train at
# once, one torch thread each (--jobs 2 --threads 1), so every stage's weights are the same whichever process
# trained it and however many cores the machine has.
BENCH_DET := output/bench-det
# The UniKD ablation (tools/demo.py ABLATION_STAGES) runs in the same table, paired to ROI-KD and to UniKD as well.
BENCH_DET_METHODS := student kd dkd fitnet reviewkd unikd
BENCH_DET_ABLATION := unikd_p5_only unikd_aff16 unikd_aff64 unikd_pool7 unikd_alpha0.5 unikd_alpha2 \
	unikd_logit_dkd unikd_logit_none unikd_no_target_fit unikd_authors_code
bench-det: setup
	cd $(REPO) && $(PY) tools/demo.py --part detection --seeds 0 1 2 --jobs 2 --threads 1 \
		--det-methods $(BENCH_DET_METHODS) $(BENCH_DET_ABLATION) --output-dir $(BENCH_DET)
	cd $(REPO) && $(PY) tools/analyze_det.py \
		--config-file $(foreach m,$(BENCH_DET_METHODS),$(BENCH_DET)/seed0/$(m)/config.yaml) \
		--weights $(foreach m,$(BENCH_DET_METHODS),$(BENCH_DET)/seed0/$(m)/model_final.pth) \
		--labels $(BENCH_DET_METHODS) --output $(BENCH_DET)/analyze_det \
		DISTILL.TEACHER.CONFIG configs/Demo/teacher-R18.yaml DISTILL.TEACHER.WEIGHTS $(BENCH_DET)/teacher/model_final.pth

bench-classification: setup
	cd $(REPO) && $(PY) -m classification bench --speed --steps 6 --rounds 3
