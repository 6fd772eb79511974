"""The bench grid file: one YAML format for classification and detection, read, checked and planned into stages.

    task: classification                      # or detection: which front end trains the stages
    output_dir: output/bench/fashion_mnist    # relative to the current directory: every stage's folder
    report_dir: main                          # optional, relative to output_dir: where the report goes (default:
                                              # output_dir; grids sharing stages in one output_dir need their own)
    overrides: [SOLVER.EPOCHS, 8]             # KEY VALUE pairs applied to every student stage
    teachers:                                 # trained first (once each), unless `checkpoint` names the weights
      resnet56: {config: ../fashion_mnist/teacher_resnet56.yaml, overrides: [...], arch: resnet56}
      # r18: {config: ../Demo/teacher-R18.yaml, checkpoint: model_final.pth}  # detection: built from config
    pairs: [{teacher: resnet56, student: resnet20}]    # detection: the student is the method config's own
    methods:                                  # label: config file, or a mapping with overrides and a table title
      vanilla: ../fashion_mnist/vanilla.yaml
      aff16: {config: ../fashion_mnist/unikd.yaml, overrides: [UNIKD.AFF.CHANNELS, 16], title: "UniKD, AFF 16"}
    seeds: [0, 1, 2]
    evaluation: {select: val, report: test}   # the split that chooses (epochs, defaults), the split reported
    compare: [vanilla, kd]                    # the baselines every method is paired with (default: the task's)
    reference: unikd                          # optional: compared with every method on the `select` split
    analyze: true                             # classification: the UniKD paper's figures of each pair at seed 0
    jobs: 2                                   # stages trained at once, each in its own process (--jobs wins)
    threads: 1                                # torch threads per process (--threads wins)

Config paths are relative to the grid file. Every malformed entry is refused naming the file and the key,
before anything trains (`load_grid`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unikd.core.files import read_yaml

TASKS = ("classification", "detection")
GRID_KEYS = {"task", "output_dir", "report_dir", "overrides", "teachers", "pairs", "methods", "seeds", "evaluation",
             "compare", "reference", "analyze", "jobs", "threads"}
REQUIRED_KEYS = {"pairs", "methods", "seeds"}
TEACHER_KEYS = {"config", "overrides", "checkpoint", "arch"}
METHOD_KEYS = {"config", "overrides", "title"}
EVALUATION_KEYS = {"select", "report"}
TEACHERS_FOLDER = "teachers"


@dataclass(frozen=True)
class Teacher:
    """A grid teacher: trained from `config` into teachers/<name>, or read from `checkpoint` (built from `config`
    where given: a Detectron2 teacher is a config and weights)."""

    name: str
    config: Path | None
    checkpoint: str | None
    overrides: tuple[str, ...]
    arch: str


@dataclass(frozen=True)
class Method:
    """A method of the grid: its config file, its own overrides on top of the grid's, and its table title."""

    label: str
    config: Path
    overrides: tuple[str, ...]
    title: str


@dataclass(frozen=True)
class Pair:
    """A teacher and, for classification, the student architecture it teaches."""

    teacher: str
    student: str | None

    @property
    def label(self) -> str:
        """The pair's name in tables: `teacher->student`, or the teacher alone when the configs name the student."""
        return self.teacher if self.student is None else f"{self.teacher}->{self.student}"

    @property
    def folder(self) -> str:
        return self.teacher if self.student is None else f"{self.teacher}-{self.student}"


@dataclass(frozen=True)
class Grid:
    """A checked grid file (`load_grid`)."""

    path: Path
    task: str
    output_dir: Path
    report_dir: str | None
    overrides: tuple[str, ...]
    teachers: dict[str, Teacher]
    pairs: tuple[Pair, ...]
    methods: dict[str, Method]
    seeds: tuple[int, ...]
    select: str | None = None
    report: str | None = None
    compare: tuple[str, ...] | None = None
    reference: str | None = None
    analyze: bool = True
    jobs: int | None = None
    threads: int | None = None

    @property
    def report_folder(self) -> Path:
        """Where the grid's report files go."""
        return self.output_dir / self.report_dir if self.report_dir else self.output_dir


@dataclass(frozen=True)
class Stage:
    """One training run of a grid: a teacher (`method` None) or a student of one pair, method and seed.

    `key` is its folder relative to the grid's output folder; `teacher` is the pair's teacher (for a teacher
    stage, itself); `seed` is None for a teacher, which keeps its config's seed."""

    key: str
    folder: Path
    config: Path
    overrides: tuple[str, ...]
    teacher: Teacher
    pair: Pair | None = None
    method: Method | None = None
    seed: int | None = None
    needs: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        """How logs and progress lines name the stage."""
        if self.method is None:
            return f"teacher {self.teacher.name}"
        return f"{self.pair.label} {self.method.label} seed {self.seed}"


def _require(ok: bool, path: Path, key: str, expected: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"{path}: {key} must be {expected}, got {value!r}")


def _overrides(path: Path, key: str, value: Any) -> tuple[str, ...]:
    _require(isinstance(value, list) and len(value) % 2 == 0, path, key, "a list of KEY VALUE pairs (an even count)",
             value)
    return tuple(str(v) for v in value)


def _optional_count(path: Path, key: str, value: Any) -> int | None:
    _require(value is None or (type(value) is int and value >= 1), path, key, "an integer >= 1", value)
    return value


def _teachers(path: Path, specs: Any) -> dict[str, Teacher]:
    _require(isinstance(specs, dict), path, "teachers", "a mapping of teacher names to specs", specs)
    teachers = {}
    for name, spec in specs.items():
        key = f"teachers.{name}"
        _require(isinstance(spec, dict) and set(spec) <= TEACHER_KEYS and ("config" in spec or "checkpoint" in spec),
                 path, key, f"a mapping with `config`, `checkpoint` or both (keys among {sorted(TEACHER_KEYS)})", spec)
        config = path.parent / spec["config"] if "config" in spec else None
        checkpoint = str(spec["checkpoint"]) if "checkpoint" in spec else None
        teachers[name] = Teacher(str(name), config, checkpoint, _overrides(path, f"{key}.overrides",
                                                                           spec.get("overrides", [])),
                                 str(spec.get("arch", name)))
    return teachers


def _methods(path: Path, specs: Any) -> dict[str, Method]:
    _require(isinstance(specs, dict) and specs != {}, path, "methods",
             "a non-empty mapping of method labels to config files or {config, overrides, title}", specs)
    methods = {}
    for label, spec in specs.items():
        if isinstance(spec, str):
            spec = {"config": spec}
        _require(isinstance(spec, dict) and set(spec) <= METHOD_KEYS and isinstance(spec.get("config"), str),
                 path, f"methods.{label}",
                 f"a config file or a mapping with `config` (keys among {sorted(METHOD_KEYS)})", spec)
        methods[str(label)] = Method(str(label), path.parent / spec["config"],
                                     _overrides(path, f"methods.{label}.overrides", spec.get("overrides", [])),
                                     str(spec.get("title", label)))
    return methods


def _pairs(path: Path, task: str, specs: Any, teachers: dict[str, Teacher]) -> tuple[Pair, ...]:
    _require(isinstance(specs, list) and specs != [], path, "pairs", "a non-empty list", specs)
    needed = {"teacher", "student"} if task == "classification" else {"teacher"}
    pairs = []
    for index, pair in enumerate(specs):
        _require(isinstance(pair, dict) and needed <= set(pair) <= {"teacher", "student"}, path, f"pairs[{index}]",
                 f"a mapping with {' and '.join(f'`{k}`' for k in sorted(needed))}", pair)
        _require(pair["teacher"] in teachers, path, f"pairs[{index}].teacher",
                 f"one of the grid's teachers {sorted(teachers)}", pair["teacher"])
        pairs.append(Pair(str(pair["teacher"]), None if pair.get("student") is None else str(pair["student"])))
    return tuple(pairs)


def _relative_folder(path: Path, value: Any) -> str | None:
    _require(value is None or (isinstance(value, str) and value and not Path(value).is_absolute()
                               and ".." not in Path(value).parts), path, "report_dir",
             "a folder name inside output_dir", value)
    return value


def _method_list(path: Path, key: str, value: Any, methods: dict[str, Method]) -> tuple[str, ...]:
    _require(isinstance(value, list) and all(isinstance(v, str) and v in methods for v in value), path, key,
             f"a list of the grid's methods {sorted(methods)}", value)
    return tuple(value)


def load_grid(path: str | Path) -> Grid:
    """The grid in `path` (read with yaml.safe_load), refused with the file and key named when malformed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"bench grid not found: {path}")
    raw = read_yaml(path, "a bench grid")
    unknown, missing = set(raw) - GRID_KEYS, REQUIRED_KEYS - set(raw)
    if unknown or missing:
        raise KeyError(f"{path}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
    task = raw.get("task", "classification")
    _require(task in TASKS, path, "task", f"one of {list(TASKS)}", task)
    teachers = _teachers(path, raw.get("teachers") or {})
    methods = _methods(path, raw["methods"])
    seeds = raw["seeds"]
    _require(isinstance(seeds, list) and seeds != [] and all(type(s) is int and s >= 0 for s in seeds)
             and len(set(seeds)) == len(seeds), path, "seeds", "a non-empty list of distinct integers >= 0", seeds)
    evaluation = raw.get("evaluation") or {}
    _require(isinstance(evaluation, dict) and set(evaluation) <= EVALUATION_KEYS
             and all(isinstance(v, str) for v in evaluation.values()), path, "evaluation",
             f"a mapping of {sorted(EVALUATION_KEYS)} to split or data set names", evaluation)
    reference = raw.get("reference")
    _require(reference is None or (isinstance(reference, str) and reference in methods), path, "reference",
             f"one of the grid's methods {sorted(methods)}", reference)
    compare = _method_list(path, "compare", raw["compare"], methods) if "compare" in raw else None
    _require(isinstance(raw.get("analyze", True), bool), path, "analyze", "true or false", raw.get("analyze"))
    return Grid(
        path=path, task=task, output_dir=Path(raw.get("output_dir") or "output/bench"),
        report_dir=_relative_folder(path, raw.get("report_dir")),
        overrides=_overrides(path, "overrides", raw.get("overrides", [])), teachers=teachers,
        pairs=_pairs(path, task, raw["pairs"], teachers), methods=methods, seeds=tuple(seeds),
        select=evaluation.get("select"), report=evaluation.get("report"), compare=compare, reference=reference,
        analyze=raw.get("analyze", True), jobs=_optional_count(path, "jobs", raw.get("jobs")),
        threads=_optional_count(path, "threads", raw.get("threads")),
    )


def teacher_stages(grid: Grid) -> dict[str, Stage]:
    """The stage of every teacher the grid trains (not those given by `checkpoint`), by teacher name."""
    stages = {}
    for name, teacher in grid.teachers.items():
        if teacher.checkpoint is None:
            key = f"{TEACHERS_FOLDER}/{name}"
            stages[name] = Stage(key, grid.output_dir / key, teacher.config, teacher.overrides, teacher)
    return stages


def student_stages(grid: Grid) -> list[Stage]:
    """Every (pair, method, seed) stage in table order: pairs, then methods, then seeds. Their `needs` are left
    empty: whether a student waits for its teacher depends on whether its method reads it (`runner`)."""
    stages = []
    for pair in grid.pairs:
        teacher = grid.teachers[pair.teacher]
        for method in grid.methods.values():
            for seed in grid.seeds:
                key = f"{pair.folder}/{method.label}/seed{seed}"
                stages.append(Stage(key, grid.output_dir / key, method.config, grid.overrides + method.overrides,
                                    teacher, pair, method, seed))
    return stages
