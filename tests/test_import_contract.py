"""The import contract of docs/DESIGN.md section 2: the shared layer `unikd` imports nothing of ours and no
Detectron2, `classification` imports `unikd` only, `unikd_det` never imports `classification`."""
from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# package -> top-level modules it must never import (statically, anywhere in its files)
FORBIDDEN = {
    "unikd": {"unikd_det", "classification", "detectron2"},
    "classification": {"unikd_det", "detectron2"},
    "unikd_det": {"classification"},
}


def imported_top_levels(path: Path) -> set[str]:
    """Top-level names of every absolute import in a file (relative imports stay inside its package)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_file_of_a_package_imports_what_the_contract_forbids(package):
    files = sorted((REPO / package).rglob("*.py"))
    assert files
    offenders = {
        str(path.relative_to(REPO)): sorted(imported_top_levels(path) & FORBIDDEN[package]) for path in files
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_static_check_sees_a_forbidden_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom detectron2.config import get_cfg\nfrom . import sibling\n")
    assert imported_top_levels(bad) == {"os", "detectron2"}


def test_shared_layer_and_classification_load_no_detectron2_where_it_is_installed():
    """Run where detectron2 IS importable (the project's venv): importing the shared layer and every
    classification entry module must still leave it, and the detection plugin, out of sys.modules."""
    assert importlib.util.find_spec("detectron2") is not None, "this test needs detectron2 installed"
    code = (
        "import sys\n"
        "import unikd, unikd.core, unikd.terms, unikd.data.fashion_mnist, unikd.bench.cli, unikd.bench.runner\n"
        "import classification, classification.config, classification.engine, classification.bench\n"
        "import classification.__main__, classification.catalog\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'detectron2', 'unikd_det'}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
