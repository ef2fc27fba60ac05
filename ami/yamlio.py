"""The YAML dialect of config files: YAML 1.2 scalars on PyYAML, duplicate keys rejected.

PyYAML reads YAML 1.1, where `country: no` is False and `lr: 1e-3` is a string; config
files are read as YAML 1.2 reads them (only true/false are booleans, exponent floats are
floats), and a key given twice in one mapping is an error rather than a silent override.
`safe_dump` quotes every string the loader would read back as something else, so
`safe_load(safe_dump(x)) == x` for plain data. Errors are `yaml.YAMLError`s.
"""

from __future__ import annotations

import re
from typing import Any

import yaml


class _Loader(yaml.SafeLoader):
    """Safe YAML loader that reads scalars as YAML 1.2 does and rejects duplicate keys.

    `1e-3` is a float and `yes`/`no`/`on`/`off` are strings (YAML 1.1 reads them as booleans).
    """


# PyYAML follows YAML 1.1, where `country: no` is False: keep only true/false as booleans.
_BOOL_TAG = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
# YAML 1.1 also needs a dot in a float, so `lr: 1e-3` would load as the string '1e-3'.
_EXP_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _EXP_FLOAT, list("-+0123456789"))


class _Dumper(yaml.SafeDumper):
    """Safe YAML dumper that quotes any string either YAML 1.1 or `_Loader` would read as non-string."""


_Dumper.add_implicit_resolver("tag:yaml.org,2002:float", _EXP_FLOAT, list("-+0123456789"))
_Dumper.add_representer(list, lambda dumper, v: dumper.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
            continue
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def safe_load(text: str) -> Any:
    """Plain data from YAML `text` in this dialect."""
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass


def safe_dump(data: Any) -> str:
    """YAML text for plain `data`, keys in insertion order, lists in flow style."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)
