"""The documentation contract: a short README, links that resolve inside the repository, the generated options
page in step with the options dataclasses (and with both generated config nodes), the README's Makefile commands,
and a feature table that names exactly the registered terms with the tasks their shipped configs run."""
from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from unikd.terms import registered_terms

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = REPO / "docs"
MAKEFILE = REPO / "Makefile"
MAX_README_LINES = 200
MAX_LINE_CHARS = 120

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
# [text](target) and ![alt](target), with an optional "title"; the target is group 1.
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def _load_option_docs_tool():
    spec = importlib.util.spec_from_file_location("write_option_docs", REPO / "tools" / "write_option_docs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def option_docs():
    return _load_option_docs_tool()


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def prose(text: str) -> str:
    """`text` without fenced code blocks and inline code, where a bracket is not a link."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def links(text: str) -> list[str]:
    return LINK.findall(prose(text))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (not - or _), spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def broken_links(path: Path, root: Path = REPO) -> list[str]:
    """'file: target (why)' for every link of the Markdown file `path` that is absolute, leaves `root`, names
    a file that does not exist, or names an anchor the target Markdown file has no heading for."""
    problems = []
    name = path.relative_to(root).as_posix()
    for target in links(path.read_text(encoding="utf-8")):
        if SCHEME.match(target):
            continue  # a web address
        file_part, _, anchor = target.partition("#")
        if file_part.startswith("/"):
            problems.append(f"{name}: {target} (absolute: links must be relative)")
            continue
        resolved = (path.parent / file_part).resolve() if file_part else path.resolve()
        if not resolved.is_relative_to(root.resolve()):
            problems.append(f"{name}: {target} (outside the repository)")
        elif not resolved.exists():
            problems.append(f"{name}: {target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{name}: {target} (no heading with that anchor)")
    return problems


def makefile_targets(text: str) -> dict[str, tuple[list[str], list[str]]]:
    """{target: (prerequisites, recipe lines)} of a Makefile (continuation lines joined)."""
    text = text.replace("\\\n", " ")
    targets: dict[str, tuple[list[str], list[str]]] = {}
    current = None
    for line in text.splitlines():
        rule = re.match(r"^([A-Za-z0-9_.-]+)\s*:(?!=)(.*)$", line)
        if rule and not line.startswith("\t"):
            current = rule.group(1)
            targets[current] = (rule.group(2).split(), [])
        elif line.startswith("\t") and current is not None:
            targets[current][1].append(line.strip())
        elif line.strip() and not line.startswith("#"):
            current = None
    return targets


def feature_table(text: str) -> dict[str, dict[str, str]]:
    """{term: {column: cell}} of the README's table whose header starts with `| term |`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"^\|\s*term\s*\|", line))
    header = [cell.strip() for cell in lines[start].strip().strip("|").split("|")]
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        term = re.fullmatch(r"`(\w+)`", cells[0])
        assert term, f"the feature table's first column names a term in backticks, got {cells[0]!r}"
        rows[term.group(1)] = dict(zip(header, cells))
    return rows


def enabled_detection_terms() -> set[str]:
    """The terms some shipped Detectron2 config (configs/**.yaml) switches on."""
    names = set()
    for path in (REPO / "configs").rglob("*.yaml"):
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
        distill = (config.get("DISTILL") if isinstance(config, dict) else None) or {}
        names |= {key.lower() for key, node in distill.items() if isinstance(node, dict) and node.get("ENABLED")}
    return names


# (a) -------------------------------------------------------------------------------------------------------------

def test_readme_is_short_with_short_lines():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; at most {MAX_README_LINES}"
    long = [f"{number}: {len(line)} chars" for number, line in enumerate(lines, 1) if len(line) > MAX_LINE_CHARS]
    assert not long, f"README.md lines over {MAX_LINE_CHARS} characters:\n" + "\n".join(long)


# (b) -------------------------------------------------------------------------------------------------------------

def test_every_relative_link_in_readme_and_docs_resolves_inside_the_repository():
    files = markdown_files()
    assert README in files and len(files) > 5
    problems = [problem for path in files for problem in broken_links(path)]
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_the_link_checker_reports_missing_outside_absolute_and_anchor_targets(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# Page\n\n## The `DISTILL` node\n", encoding="utf-8")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/page.md) [ok anchor](docs/page.md#the-distill-node) [web](https://example.org/x.md)\n"
        "[missing](docs/none.md) [outside](../elsewhere.md) [absolute](/etc/hosts) [bad anchor](docs/page.md#nope)\n"
        "`[not a link](docs/none.md)`\n```\n[nor this](docs/none.md)\n```\n",
        encoding="utf-8",
    )
    problems = broken_links(page, root=tmp_path)
    assert [p.split(" (")[1] for p in problems] == [
        "no such file)", "outside the repository)", "absolute: links must be relative)", "no heading with that anchor)"
    ]


# (c) -------------------------------------------------------------------------------------------------------------

def test_options_page_is_what_the_options_dataclasses_generate(option_docs):
    assert option_docs.check() is None, option_docs.check()
    assert option_docs.main(["--check"]) == 0


def test_options_check_fails_on_a_stale_page(option_docs, tmp_path, capsys):
    stale = tmp_path / "options.md"
    stale.write_text(option_docs.render().replace("`WEIGHT` = `0.9`", "`WEIGHT` = `0.8`"), encoding="utf-8")
    assert option_docs.main(["--check", "--output", str(stale)]) == 1
    assert "out of date" in capsys.readouterr().err
    assert option_docs.main(["--check", "--output", str(tmp_path / "none.md")]) == 1


def test_options_page_documents_every_term_and_every_key():
    text = (DOCS / "options.md").read_text(encoding="utf-8")
    for name, term in registered_terms().items():
        assert f"\n## {name}\n" in text, f"docs/options.md has no section for term {name!r}"
    assert "`DISTILL.UNIKD`" in text and "`AFF.CHANNELS` = `32`" in text


def _flat(node, prefix: str = "") -> dict:
    flat = {}
    for key, value in node.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def test_documented_defaults_equal_the_classification_config_nodes(option_docs):
    from classification.config import get_cfg

    cfg = get_cfg()
    for name, term in registered_terms().items():
        assert _flat(cfg[name.upper()]) == option_docs.task_defaults(term.Options, "classification"), name


def test_documented_defaults_equal_the_detectron2_distill_node(option_docs):
    pytest.importorskip("detectron2")
    from detectron2.config import get_cfg

    from unikd_det.config import add_distill_config

    cfg = get_cfg()
    add_distill_config(cfg)
    for name, term in registered_terms().items():
        node = _flat(cfg.DISTILL[name.upper()])
        assert node.pop("ENABLED") is False
        documented = option_docs.task_defaults(term.Options, "detection")
        assert node == documented, name
        assert {key: type(v) for key, v in node.items()} == {key: type(v) for key, v in documented.items()}, name


# (d) -------------------------------------------------------------------------------------------------------------

def test_readme_make_commands_are_makefile_targets_and_their_recipes_match():
    readme = README.read_text(encoding="utf-8")
    targets = makefile_targets(MAKEFILE.read_text(encoding="utf-8"))
    blocks = "\n".join(match.group(0) for match in FENCE.finditer(readme))
    quoted = re.findall(r"^make ([\w-]+)", blocks, re.M)
    assert {"demo", "test"} <= set(quoted), "README's code blocks must show `make demo` and `make test`"
    mentioned = set(re.findall(r"\bmake ([a-z][\w-]*)", readme))
    unknown = sorted(mentioned - set(targets))
    assert not unknown, f"README names make targets the Makefile does not define: {unknown}"
    for target in ("demo", "test"):
        prerequisites, _ = targets[target]
        assert "setup" in prerequisites, f"`make {target}` must set everything up first"
        assert "tools/setup_env.sh" in " ".join(targets["setup"][1])
    claims = re.findall(r"`make ([\w-]+)`\s+runs\s+`([^`]+)`", readme)
    assert {target for target, _ in claims} >= {"demo", "test"}, (
        "README should say which command each of `make demo` and `make test` runs"
    )
    for target, command in claims:
        recipe = " ".join(targets[target][1])
        assert command in recipe, f"README says `make {target}` runs `{command}`; its recipe is: {recipe}"


def test_paths_the_readme_quotes_exist():
    readme = README.read_text(encoding="utf-8")
    paths = set(re.findall(r"(?<![\w./<-])((?:configs|classification/configs|tools|docs)/[\w./-]+\.(?:yaml|py|md))",
                           readme))
    assert any(p.startswith("configs/") for p in paths) and any(p.startswith("classification/") for p in paths)
    missing = sorted(p for p in paths if not (REPO / p).is_file())
    assert not missing, f"README quotes paths that are not in the repository: {missing}"


# (e) -------------------------------------------------------------------------------------------------------------

def test_feature_table_lists_exactly_the_registered_terms():
    table = feature_table(README.read_text(encoding="utf-8"))
    terms = set(registered_terms())
    assert set(table) == terms, (
        f"not registered terms: {sorted(set(table) - terms)}; registered but missing: {sorted(terms - set(table))}"
    )
    for name, row in table.items():
        source = row["official source (repository: file)"]
        assert re.search(r"[\w.-]+/[\w.-]+", source), f"{name}: the source must name a repository"


def test_feature_table_task_columns_match_the_shipped_configs():
    table = feature_table(README.read_text(encoding="utf-8"))
    detection = enabled_detection_terms()
    pair = REPO / "classification" / "configs" / "cifar100" / "res32x4_res8x4"
    for name, row in table.items():
        assert row["detection"] in ("yes", "no") and row["classification"] in ("yes", "no"), name
        assert (row["detection"] == "yes") == (name in detection), f"{name}: detection column vs configs/"
        assert (row["classification"] == "yes") == (pair / f"{name}.yaml").is_file(), f"{name}: classification column"


@pytest.mark.parametrize("task", ["classification", "detection", "detection_fpn_baselines", "vs_mdistiller"])
def test_speed_page_quotes_each_recorded_table_unchanged(task):
    record = json.loads((REPO / "docs" / "results" / "speed" / f"{task}.json").read_text(encoding="utf-8"))
    page = (REPO / "docs" / "results" / "speed.md").read_text(encoding="utf-8")
    assert record["table"] in page
    assert f"speed/{task}.json" in page and record["date"].startswith("2026-12-07")
    ratios = {variant: entry["ratio"] for variant, entry in record["ratios"].items()}
    assert ratios and all(0.5 < ratio < 5 for ratio in ratios.values())  # a run under heavy load reads 0.25


@pytest.mark.parametrize("task", ["vs_mdistiller", "detection"])
def test_readme_quotes_the_speed_tables_unchanged(task):
    record = json.loads((REPO / "docs" / "results" / "speed" / f"{task}.json").read_text(encoding="utf-8"))
    assert record["table"] in README.read_text(encoding="utf-8")


def test_speed_page_quotes_the_loader_measurement_unchanged():
    record = json.loads((REPO / "docs" / "results" / "speed" / "data_loader.json").read_text(encoding="utf-8"))
    page = (REPO / "docs" / "results" / "speed.md").read_text(encoding="utf-8")
    assert record["table"] in page and "speed/data_loader.json" in page
    assert set(record["images_per_second"]) == {"0", "1", "2"} and min(record["images_per_second"].values()) > 0
