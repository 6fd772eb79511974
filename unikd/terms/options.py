"""Term options <-> yacs config nodes: the options dataclass is the one source of every default.

`options_node(Options, task)` generates the node a front end adds to its config (the dataclass defaults with
the task's preset applied; field `fit_temperature` becomes key `FIT_TEMPERATURE`, a nested options dataclass a
sub-node), and `options_from_node(Options, node)` reads a merged node back into a validated dataclass. Both
front ends call these two and nothing else, so their keys and defaults cannot drift apart.
"""
from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from yacs.config import CfgNode

from .base import TermOptions

OptionsT = TypeVar("OptionsT")


def _with_preset(options: Any, preset: dict[str, Any]) -> Any:
    """`options` with the preset's fields replaced (a nested dict updates a nested options dataclass)."""
    changes = {}
    for key, value in preset.items():
        if key not in {f.name for f in dataclasses.fields(options)}:
            raise KeyError(f"preset names {key!r}, which {type(options).__name__} has no field for")
        current = getattr(options, key)
        changes[key] = _with_preset(current, value) if dataclasses.is_dataclass(current) else value
    return dataclasses.replace(options, **changes)


def default_options(options_cls: type[OptionsT], task: str | None = None) -> OptionsT:
    """The defaults of `options_cls`, with its `PRESETS[task]` applied when it has one."""
    options = options_cls()
    preset = getattr(options_cls, "PRESETS", {}).get(task) if task else None
    return _with_preset(options, preset) if preset else options


def to_node(options: Any, node_type: type[CfgNode] = CfgNode) -> CfgNode:
    """A yacs node (of `node_type`, e.g. Detectron2's CfgNode) holding every field of `options`, upper-cased."""
    node = node_type()
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        node[f.name.upper()] = to_node(value, node_type) if dataclasses.is_dataclass(value) else _yacs_value(value)
    return node


def _yacs_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def options_node(options_cls: type[TermOptions], task: str | None = None,
                 node_type: type[CfgNode] = CfgNode) -> CfgNode:
    """The config node of a term for `task`: its dataclass defaults with the task's preset."""
    return to_node(default_options(options_cls, task), node_type)


def options_from_node(options_cls: type[OptionsT], node: Any, ignore: frozenset[str] = frozenset()) -> OptionsT:
    """Read a merged config node into `options_cls` (its __post_init__ validates the values).

    `ignore`: front-end keys of the node that are not options (Detectron2's ENABLED)."""
    kwargs = {}
    defaults = options_cls()
    for f in dataclasses.fields(options_cls):
        value = node[f.name.upper()]
        default = getattr(defaults, f.name)
        if dataclasses.is_dataclass(default):
            value = options_from_node(type(default), value)
        elif isinstance(value, tuple):
            value = list(value)
        kwargs[f.name] = value
    extra = set(node.keys()) - {f.name.upper() for f in dataclasses.fields(options_cls)} - set(ignore)
    if extra:
        raise KeyError(f"config node has keys {sorted(extra)} that {options_cls.__name__} does not define")
    return options_cls(**kwargs)


def option_docs(options_cls: type[TermOptions], prefix: str = "") -> dict[str, str]:
    """{KEY or SUB.KEY: one-line doc} of every option, for generated documentation."""
    docs = {}
    defaults = options_cls()
    for f in dataclasses.fields(options_cls):
        key = f"{prefix}{f.name.upper()}"
        default = getattr(defaults, f.name)
        docs[key] = f.metadata.get("doc", "")
        if dataclasses.is_dataclass(default):
            docs.update(option_docs(type(default), f"{key}."))
    return docs
