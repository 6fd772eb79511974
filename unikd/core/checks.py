"""Argument validation shared by the loss core and the config-driven front ends."""
from __future__ import annotations

import logging
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

import yaml

logger = logging.getLogger(__name__)


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    """Return `value`; raise ValueError naming the bad value and the allowed ones when not in `allowed`."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {allowed}")
    return value


@dataclass(frozen=True)
class ValueRule:
    """A bound on every numeric config value whose dotted key matches `pattern` (fnmatch, upper case).

    `value > minimum` when `strict`, else `value >= minimum`; a value equal to `warn_at` passes with a warning.
    Lists and tuples are checked element by element; booleans and strings are never checked.
    """

    pattern: str
    minimum: float
    strict: bool = False
    warn_at: float | None = None

    def describe(self) -> str:
        return f"{'>' if self.strict else '>='} {self.minimum:g}"

    def allows(self, value: float) -> bool:
        return value > self.minimum if self.strict else value >= self.minimum


# Bounds that hold for the same idea in both front ends: temperatures are positive, loss weights and warm-ups
# are not negative, widths, batch sizes and epoch counts are at least 1.
COMMON_VALUE_RULES: tuple[ValueRule, ...] = (
    ValueRule("*TEMPERATURE", 0.0, strict=True),
    ValueRule("*TEMPERATURES", 0.0, strict=True),
    ValueRule("*WEIGHT", 0.0),
    ValueRule("*_WEIGHTS", 0.0),
    ValueRule("*WEIGHT_DECAY", 0.0),
    ValueRule("*.WARMUP", 0.0),
    ValueRule("*.START", 0.0),
    ValueRule("*WARMUP_ITERS", 0.0),
    ValueRule("*CHANNELS", 1.0),
    ValueRule("*BATCH_SIZE", 1.0),
    ValueRule("*EPOCHS", 1.0),
)


def _numbers(value: Any) -> list[float] | None:
    """The numbers in a config value (a number or a list/tuple of numbers), or None when it holds none."""
    items = value if isinstance(value, (list, tuple)) else [value]
    numbers = [v for v in items if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return numbers if numbers and len(numbers) == len(items) else None


def config_leaves(node: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) for every leaf of a nested config mapping (a yacs or Detectron2 CfgNode, a dict)."""
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from config_leaves(value, f"{name}.")
        else:
            yield name, value


def check_config_values(node: Mapping[str, Any], rules: Sequence[ValueRule]) -> list[str]:
    """Check every numeric leaf of a (nested) config against the first rule whose pattern matches its key.

    Raises one ValueError that lists every violating key with its value and bound, so a user fixes all of
    them in one go. Returns the warnings (values equal to a rule's `warn_at`), also logged.
    """
    errors, warnings = [], []
    for key, value in config_leaves(node):
        numbers = _numbers(value)
        rule = next((r for r in rules if fnmatchcase(key, r.pattern)), None)
        if numbers is None or rule is None:
            continue
        if not all(rule.allows(v) for v in numbers):
            errors.append(f"{key} = {value!r} (must be {rule.describe()})")
        elif rule.warn_at is not None and any(v == rule.warn_at for v in numbers):
            warnings.append(f"{key} = {value!r}: nothing will be learned")
    if errors:
        raise ValueError("invalid config values: " + "; ".join(errors))
    for message in warnings:
        logger.warning(message)
    return warnings


def config_differences(old: Any, new: Any, ignore: Collection[str] = (), defaults: Any = None
                       ) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (old value, new value)} for every leaf whose value differs (None where a side lacks the key).

    Each side is a config node (anything with `dump()`, yacs or Detectron2) or its YAML text, as a run folder's
    `config.yaml` or a checkpoint stores it; both are compared as YAML values, so tuples equal lists. With
    `defaults` (the toolkit's default config), a key one side lacks counts at its default value: an option added
    since a run was written does not make the run another one while the option keeps its default.
    """
    a, b = _leaves(old), _leaves(new)
    if defaults is not None:
        base = _leaves(defaults)
        a, b = ({**{k: base[k] for k in other.keys() - side.keys() if k in base}, **side}
                for side, other in ((a, b), (b, a)))
    return {key: (a.get(key), b.get(key)) for key in sorted(a.keys() | b.keys())
            if key not in ignore and a.get(key) != b.get(key)}


def _leaves(config: Any) -> dict[str, Any]:
    """{dotted key: value} of a config node or its YAML text."""
    return dict(config_leaves(yaml.safe_load(config if isinstance(config, str) else config.dump()) or {}))


def check_resume_changes(
    saved: Any, current: Any, may_change: Collection[str], source: str, saved_config: str, defaults: Any = None
) -> dict[str, tuple[Any, Any]]:
    """The values a resume changes relative to the config the run was trained with (`saved`, from `source`).

    Raises ValueError listing every changed key outside `may_change` with both values: a run resumed with
    other values would report numbers of a run nobody configured. `saved_config` is where the user finds
    the run's own values. `defaults`: as in `config_differences` (a run from before an option existed resumes).
    """
    changes = config_differences(saved, current, defaults=defaults)
    refused = {key: values for key, values in changes.items() if key not in may_change}
    if refused:
        listed = "; ".join(f"{key}: {old!r} in the run, {new!r} now" for key, (old, new) in refused.items())
        raise ValueError(
            f"--resume with values that differ from those {source} was trained with: {listed}. A resumed run may "
            f"change only {', '.join(sorted(may_change))}; resume with the run's own values ({saved_config}), "
            "or start a new run (--overwrite, or another OUTPUT_DIR)"
        )
    return changes


def resume_note(point: str, changes: Mapping[str, Sequence[Any]]) -> str:
    """The comment line a run's config.yaml carries for a resume that changed values (`point`: where it resumed)."""
    return f"# resumed {point}: " + ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in changes.items())


def resume_notes(config_text: str) -> list[str]:
    """The resume notes at the head of a run's config.yaml."""
    return [line for line in config_text.splitlines() if line.startswith("# resumed ")]
