"""The loss registry: each trainer looks its loss up here by the name its config gives.

Kept apart from the loss modules so they can register themselves without importing the package that
imports them (no import cycle); `distill_ray/losses/__init__.py` imports every loss module once, so a
caller that imports `distill_ray.losses` sees every name.
"""

from __future__ import annotations

from typing import Callable

LOSSES: dict[str, Callable] = {}


def register_loss(name: str) -> Callable[[Callable], Callable]:
    """Decorator: make `fn` available as get_loss(name). Raises ValueError if `name` is taken."""

    def add(fn: Callable) -> Callable:
        if name in LOSSES:
            raise ValueError(f"loss {name!r} is already registered")
        LOSSES[name] = fn
        return fn

    return add


def get_loss(name: str) -> Callable:
    """The loss registered under `name`. Raises KeyError listing the known names."""
    try:
        return LOSSES[name]
    except KeyError:
        raise KeyError(f"unknown loss {name!r}; known losses: {', '.join(sorted(LOSSES))}") from None
