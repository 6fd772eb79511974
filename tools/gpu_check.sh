#!/usr/bin/env bash
# The prepared GPU check: every CUDA path of the project once, one table at the end (tools/gpu_check.py says
# what it runs). On a CUDA machine, from the repository root after `make setup`:
#   tools/gpu_check.sh [--quick] [--output-dir DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-.venv/bin/python}" tools/gpu_check.py "$@"
