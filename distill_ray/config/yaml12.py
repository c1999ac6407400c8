"""Reading config YAML (files and `--set` values) with the YAML 1.2 core schema's plain scalars.

PyYAML implements YAML 1.1, where a plain `no`, `on` or `off` is a boolean, `012` an octal 10, `1_000` the
integer 1000, `1:30` the sexagesimal 90 and `2024-01-01` a date; `2e-5` (no dot) on the other hand stays a
string. A config value `no` (a label, a stage name) would silently become False. `Yaml12Loader` is PyYAML's
SafeLoader with the implicit resolvers of the YAML 1.2 core schema instead:

- null: `null`, `Null`, `NULL`, `~` and the empty value;
- booleans: `true`, `True`, `TRUE`, `false`, `False`, `FALSE`;
- integers: decimal only, `[-+]?[0-9]+` (`012` is twelve);
- floats: `1.5`, `.5`, `1.`, `2e-5`, `-1.5E+3`, and `.inf`, `-.inf`, `.nan` in the three spellings of each;
- everything else is a string. Quoting, flow lists and maps (`[0.6, 0.9]`, `{a: 1}`), anchors and the `<<`
  merge key work as before.

One deliberate gap: the core schema also reads `0o17` and `0x1F` as integers; no key here takes octal or hex,
so they stay text rather than turning a hex id into a number. An explicit tag (`!!int`, `!!float`, `!!bool`)
accepts only what the untagged form would (`!!bool yes` is an error, not False).

Why a resolver table on PyYAML and not a YAML 1.2 library: ruamel.yaml, the maintained 1.2 parser, is not
installed here and would be a second YAML parser in the dependencies only to change how plain scalars are
typed, which is exactly what PyYAML's implicit resolvers are for; it would also read `0x1F` as a number.
"""

from __future__ import annotations

import math
import re
from typing import Any, ClassVar

import yaml

_FLOAT_FIRST = list("-+.0123456789")
# (tag, pattern, characters a matching scalar can start with); the first match wins, so int before float.
CORE_SCHEMA_RESOLVERS: tuple[tuple[str, str, list[str]], ...] = (
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    ("tag:yaml.org,2002:int", r"^[-+]?[0-9]+$", list("-+0123456789")),
    ("tag:yaml.org,2002:float", r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$", _FLOAT_FIRST),
    ("tag:yaml.org,2002:float", r"^(?:[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", list("-+.")),
    ("tag:yaml.org,2002:merge", r"^<<$", ["<"]),
)


class Yaml12Loader(yaml.SafeLoader):
    """SafeLoader whose untagged scalars resolve by the YAML 1.2 core schema (see the module docstring)."""

    # Its own table, so the resolvers below replace SafeLoader's instead of joining them.
    yaml_implicit_resolvers: ClassVar[dict[str | None, list[tuple[str, re.Pattern[str]]]]] = {}


def _refuse(node: yaml.ScalarNode, what: str) -> yaml.constructor.ConstructorError:
    """The error for an explicitly tagged scalar (`!!int abc`) that is not what its tag says."""
    return yaml.constructor.ConstructorError(None, None, f"{node.value!r} is not {what}", node.start_mark)


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node))
    if not re.fullmatch(r"[-+]?[0-9]+", text):  # reached only through an explicit `!!int` tag
        raise _refuse(node, "a decimal integer")
    return int(text, 10)  # base 10 always: `012` is twelve, not YAML 1.1's ten


def _construct_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    text = str(loader.construct_scalar(node))
    special = text.lstrip("+-").lower()
    if special == ".inf":
        return -math.inf if text.startswith("-") else math.inf
    if special == ".nan":
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise _refuse(node, "a number") from None


def _construct_merge_as_text(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> str:
    return str(loader.construct_scalar(node))  # `<<` merges only as a mapping key; as a value it is text


def _construct_bool(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> bool:
    text = str(loader.construct_scalar(node)).lower()
    if text not in ("true", "false"):  # reached only through an explicit `!!bool` tag: `!!bool yes` is refused
        raise _refuse(node, "true or false")
    return text == "true"


for _tag, _pattern, _first in CORE_SCHEMA_RESOLVERS:
    Yaml12Loader.add_implicit_resolver(_tag, re.compile(_pattern), _first)
Yaml12Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
Yaml12Loader.add_constructor("tag:yaml.org,2002:float", _construct_float)
Yaml12Loader.add_constructor("tag:yaml.org,2002:bool", _construct_bool)
Yaml12Loader.add_constructor("tag:yaml.org,2002:merge", _construct_merge_as_text)


def load_yaml(text: str) -> Any:
    """Parse one YAML document with `Yaml12Loader`; raises `yaml.YAMLError` on bad syntax."""
    return yaml.load(text, Loader=Yaml12Loader)  # a SafeLoader subclass: no arbitrary objects
