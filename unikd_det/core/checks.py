"""Argument validation shared by the loss core and the config-driven front ends."""
from __future__ import annotations


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    """Return `value`; raise ValueError naming the bad value and the allowed ones when not in `allowed`."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {allowed}")
    return value
