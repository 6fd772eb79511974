# The two commands of the README. Both (re)create .venv/ through tools/setup_env.sh first.
REPO := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
PY := $(REPO)/.venv/bin/python

.PHONY: setup demo test test-all bench bench-classification

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

bench-classification: setup
	cd $(REPO) && $(PY) -m classification bench --speed --steps 6 --rounds 3
