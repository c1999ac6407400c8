"""Pydantic validation errors -> one `ConfigError` naming real config keys, every problem at once.

Where it sits: `loader.py` validates a config (a job, or each stage of a pipeline) and hands every
`ValidationError` to an `ErrorReport`, which raises one `ConfigError` at the end (one line, exit 2). Two
things of pydantic's are undone here:

- Its error locations mix config keys with the labels of the union branch or validator that failed
  (`inference.temperature.float`, `...list[float].1`). `key_path` walks the location along the model's
  annotations and keeps only real keys: field names, mapping keys (`models.teachers.big`) and list positions,
  written `[i]` (`inference.temperature[1]`).
- It reports each section's errors, but a user fixing them one `distill-ray validate` at a time needs as many
  round trips as there are mistakes. The report names every unknown key first, then every other problem.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from distill_ray.config.easydistill import NO_PLACE_HERE
from distill_ray.errors import ConfigError

Part = tuple[str | int, str]  # (the key as in the raw mapping, how it is written in a key path)


def _members(annotation: Any) -> list[Any]:
    """The types a value of `annotation` may have: unions flattened, `None` and `Annotated` metadata dropped."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _members(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return [member for arg in get_args(annotation) for member in _members(arg)]
    return [] if annotation is type(None) else [annotation]


def _step(members: list[Any], item: str | int) -> tuple[Any, str] | None:
    """Where `item` leads from a value of one of `members` (its annotation, and how it is written), or None
    when `item` is no key of theirs: then it is a label pydantic put in the location."""
    for tp in members:
        if tp is Any:
            return Any, f".{item}"
        if isinstance(tp, type) and issubclass(tp, BaseModel) and item in tp.model_fields:
            return tp.model_fields[item].annotation, f".{item}"
        origin, args = get_origin(tp) or tp, get_args(tp)
        if isinstance(item, int) and isinstance(origin, type) and issubclass(origin, (list, tuple, set, frozenset)):
            fixed = origin is tuple and args and args[-1] is not Ellipsis
            return (args[item] if fixed and item < len(args) else args[0] if args else Any), f"[{item}]"
        if isinstance(origin, type) and issubclass(origin, Mapping):
            return (args[1] if len(args) == 2 else Any), f".{item}"
    return None


def key_path(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[Part]:
    """The config keys in a pydantic error location of `model`, without union-branch and validator labels."""
    parts: list[Part] = []
    members: list[Any] = [model]
    label_due = False
    for item in loc:
        # A union that failed names the branch it tried (`float`, `list[float]`, `ServeConfig`) right before
        # that branch's keys; as text it would pass for a mapping key, so it is skipped before any lookup.
        if label_due and isinstance(item, str):
            label_due = False
            continue
        step = _step(members, item)
        if step is None:  # a label elsewhere: a mapping's `[key]`, a validator's name
            continue
        parts.append((item, step[1]))
        members = _members(step[0])
        label_due = len(members) > 1
    return parts


def _written_in(raw: Any, parts: list[Part]) -> bool:
    """Whether the key `parts` leads to is present in the raw mapping `raw`."""
    node = raw
    for item, _ in parts:
        in_list = isinstance(node, list) and isinstance(item, int) and item < len(node)
        if not (in_list or (isinstance(node, dict) and item in node)):
            return False
        node = node[item]
    return True


def _problem(err: dict[str, Any]) -> str:
    if err["type"] == "missing":
        return "required key is missing"
    msg = err["msg"].removeprefix("Value error, ")
    if "input" in err and not isinstance(err["input"], (dict, list)):
        msg = f"{msg} (got {err['input']!r})"
    return msg


class ErrorReport:
    """Every problem found in one config, raised as one `ConfigError`: unknown keys first, then the others."""

    def __init__(self) -> None:
        self.unknown: dict[str, str] = {}  # key as named -> its path inside a stage (the same outside pipelines)
        self.problems: dict[str, str] = {}  # key -> its first problem (a union repeats one per branch)

    def unknown_key(self, key: str, bare: str | None = None) -> None:
        """Record an unknown key; `bare` is its path inside a stage, for the hint of an EasyDistill key."""
        if key not in self.unknown:
            self.unknown[key] = bare or key

    def add(self, exc: ValidationError, model: type[BaseModel], prefix: str = "", written: Any = None) -> None:
        """Record `exc`'s errors, keys prefixed with `prefix`. With `written` (the raw mapping of a pipeline
        stage), a key that is not written there came from the pipeline's defaults and is named without the
        prefix, once, rather than once per stage."""
        for err in exc.errors():
            unknown = err["type"] == "extra_forbidden"
            parts = key_path(model, err["loc"][:-1] if unknown else err["loc"])
            if unknown:
                parts.append((err["loc"][-1], f".{err['loc'][-1]}"))
            path = "".join(text for _, text in parts).lstrip(".")
            # A missing key is not written anywhere: where its section is written says whose it is.
            own = written is None or _written_in(written, parts[:-1] if err["type"] == "missing" else parts)
            key = (f"{prefix}{path}" if path else prefix.rstrip(".")) if own and prefix else path
            key = key or "<root>"
            if unknown:
                self.unknown_key(key, path)
            else:
                self.problems.setdefault(key, _problem(err))

    def error(self) -> ConfigError | None:
        """The one error to raise, or None when nothing was found."""
        named = [*self.unknown, *self.problems]
        # A union reports a mismatch of its whole value next to the real fault deeper inside it (a list given
        # to `float | list[float]` fails as a float at K and as a list at K[1]): keep the deeper one. Nothing
        # else puts a problem at K beside one under K, since a model's own validators run only when its
        # fields are valid.
        others = [(k, p) for k, p in self.problems.items() if not any(n.startswith((f"{k}.", f"{k}[")) for n in named)]
        if not self.unknown and not others:
            return None
        if not self.unknown:
            (key, problem), rest = others[0], others[1:]
        else:
            key, problem, rest = ", ".join(self.unknown), _unknown_problem(self.unknown), others
        return ConfigError(key, "; ".join([problem, *(f"{k}: {p}" for k, p in rest)]))

    def raise_if_any(self) -> None:
        error = self.error()
        if error is not None:
            raise error


def _unknown_problem(unknown: dict[str, str]) -> str:
    """`unknown key(s)`, with what to do instead for EasyDistill keys that have no place here."""
    hints = [f"{key}: {NO_PLACE_HERE[bare]}" for key, bare in unknown.items() if bare in NO_PLACE_HERE]
    text = "unknown key" if len(unknown) == 1 else "unknown keys"
    return f"{text} ({'; '.join(hints)})" if hints else text
