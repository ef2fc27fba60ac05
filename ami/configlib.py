"""Config machinery for trees of frozen dataclasses: build, check, override, load and save.

This module owns the generic half of "config is data": it knows nothing about any concrete
experiment. Given a frozen dataclass `cls` whose fields are annotated with plain types, it

* builds `cls` from a plain mapping (`from_dict`), failing on an unknown key, a missing
  required key, a wrong type or an impossible value with a `ConfigError` that names the
  dotted key (`planner.horizon: expected int, got 'forty' (str)`);
* calls each section's optional `validate(self)` after building it, prefixing its errors with
  the section path (`check` is the helper a `validate` method uses to name a key);
* turns a config back into plain data (`to_dict`, `dumps`, `dump`) so that
  `from_dict(cls, to_dict(x)) == x`;
* applies dotted command-line overrides (`parse_override`, `apply_overrides`, `load`) and
  programmatic ones (`replace_path`).

Supported annotations: `int`, `float` (an int is accepted and converted), `bool` (only a real
bool), `str`, `Literal[...]`, unions such as `X | None`, `tuple[X, ...]` and `tuple[X, Y]`
(YAML lists become tuples), `dict[str, X]` (a free-form mapping kept as a plain dict), `Any`,
and nested frozen dataclasses.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import reprlib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from ami import yamlio

__all__ = [
    "ConfigError",
    "apply_overrides",
    "check",
    "dump",
    "dumps",
    "from_dict",
    "load",
    "parse_override",
    "replace_path",
    "to_dict",
]


class ConfigError(ValueError):
    """A config value that cannot be accepted; `key` is the dotted path it concerns ("" if none)."""

    def __init__(self, message: str, key: str = "") -> None:
        self.key = key
        self.detail = message
        super().__init__(f"{key}: {message}" if key else message)


class _TypeMismatchError(ConfigError):
    """The value at `key` has the wrong shape for the annotation (a union may try another arm)."""


def check(condition: bool, key: str, message: str) -> None:
    """Raise `ConfigError(message, key)` unless `condition`; for use inside `validate` methods.

    `key` is relative to the section being validated; `from_dict` prefixes the section path,
    so `check(self.horizon >= 1, "horizon", "must be >= 1, got 0")` in the `planner` section
    reads `planner.horizon: must be >= 1, got 0`.
    """
    if not condition:
        raise ConfigError(message, key)


# ----------------------------------------------------------------------------- paths and names


def _join(path: str, name: object) -> str:
    return f"{path}.{name}" if path else str(name)


def _show(value: object) -> str:
    """`'forty' (str)`: the value received and its type, for error messages."""
    return f"{reprlib.repr(value)} ({type(value).__name__})"


def _type_name(tp: Any) -> str:
    """`int | None`, `tuple[float, ...]`, `Literal['a', 'b']`: an annotation as a reader writes it."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return "None"
    if tp is Ellipsis:
        return "..."
    if origin is Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', origin)}[{', '.join(_type_name(a) for a in args)}]"
    return getattr(tp, "__name__", repr(tp))


def _suggest(word: object, choices: Iterable[object]) -> str:
    """`"; did you mean 'horizon'?"` when `word` is close to one of `choices`, else ""."""
    words = [c for c in choices if isinstance(c, str)]
    close = difflib.get_close_matches(str(word), words, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _mismatch(key: str, tp: object, value: object) -> _TypeMismatchError:
    return _TypeMismatchError(f"expected {_type_name(tp)}, got {_show(value)}", key)


# ----------------------------------------------------------------------------- schema


@dataclasses.dataclass(frozen=True)
class _Field:
    name: str
    tp: Any
    required: bool


@functools.cache
def _schema(cls: type) -> dict[str, _Field]:
    """The init fields of the frozen dataclass `cls`, with resolved type hints."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not cls.__dataclass_params__.frozen:
        raise TypeError(f"config dataclass {cls.__name__} must be frozen (@dataclass(frozen=True))")
    hints = typing.get_type_hints(cls)
    missing = dataclasses.MISSING
    return {
        f.name: _Field(f.name, hints[f.name], f.default is missing and f.default_factory is missing)
        for f in dataclasses.fields(cls)
        if f.init
    }


def _unknown_key(path: str, key: object, valid: Iterable[str]) -> ConfigError:
    valid = list(valid)
    where = f" in {path}" if path else ""
    listing = ", ".join(valid) if valid else "(none)"
    return ConfigError(f"unknown key{where}{_suggest(key, valid)} (valid keys: {listing})", _join(path, key))


# ----------------------------------------------------------------------------- building


def from_dict[T](cls: type[T], data: Mapping[str, Any], path: str = "") -> T:
    """Build the frozen dataclass `cls` from plain data, checking keys, types and values.

    `path` is the dotted location of this section, used in error messages. Missing keys take
    the field default; fields without a default are required. After the object is built its
    `validate()` method, if any, is called.
    """
    schema = _schema(cls)
    if not isinstance(data, Mapping):
        raise _TypeMismatchError(f"expected a mapping for {cls.__name__}, got {_show(data)}", path)
    for key in data:
        if key not in schema:
            raise _unknown_key(path, key, schema)
    kwargs = {}
    for name, field in schema.items():
        key = _join(path, name)
        if name in data:
            kwargs[name] = _convert(field.tp, data[name], key)
        elif field.required:
            raise ConfigError(f"required key is missing (type {_type_name(field.tp)})", key)
    obj = cls(**kwargs)
    _validate(obj, path)
    return obj


def _validate(obj: object, path: str) -> None:
    """Run `obj.validate()` if it exists, naming `path` in any error it raises."""
    validate = getattr(obj, "validate", None)
    if not callable(validate):
        return
    try:
        validate()
    except ConfigError as err:
        raise ConfigError(err.detail, _join(path, err.key) if err.key else path) from err
    except ValueError as err:
        raise ConfigError(str(err), path) from err


def _convert(tp: Any, value: Any, key: str) -> Any:
    """Check `value` against the annotation `tp` and return it in its stored form."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return _plain(value)
    if origin is Literal:
        return _convert_literal(typing.get_args(tp), value, key)
    if origin in (typing.Union, types.UnionType):
        return _convert_union(tp, value, key)
    if origin is tuple or tp is tuple:
        return _convert_tuple(tp, value, key)
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        return _convert_dict(tp, value, key)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _convert_dataclass(tp, value, key)
    if tp in _SCALARS:
        return _SCALARS[tp](tp, value, key)
    raise TypeError(f"{key}: unsupported config annotation {_type_name(tp)}")


def _exact(tp: type, value: Any, key: str) -> Any:
    # bool is a subclass of int: `True` is not an int here, and `1` is not a bool.
    if not isinstance(value, tp) or isinstance(value, bool) != (tp is bool):
        raise _mismatch(key, tp, value)
    return value


# NaN and infinity as YAML 1.2 writes them (`.nan`, `.inf`) are floats already; these spellings
# are read as floats too, so a section's `validate` can say why the value is impossible.
_NONFINITE = {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}


def _float(tp: type, value: Any, key: str) -> float:
    if isinstance(value, str) and value.strip().lower() in _NONFINITE:
        return float(value.strip().lower().replace("+", ""))
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _mismatch(key, tp, value)
    return float(value)


_SCALARS = {int: _exact, bool: _exact, str: _exact, float: _float}


def _convert_literal(choices: tuple[Any, ...], value: Any, key: str) -> Any:
    if any(type(value) is type(c) and value == c for c in choices):
        return value
    listing = ", ".join(repr(c) for c in choices)
    raise _TypeMismatchError(f"expected one of {listing}, got {_show(value)}{_suggest(value, choices)}", key)


def _convert_union(tp: Any, value: Any, key: str) -> Any:
    arms = typing.get_args(tp)
    if value is None and type(None) in arms:
        return None
    for arm in arms:
        if arm is type(None):
            continue
        try:
            return _convert(arm, value, key)
        except _TypeMismatchError as err:
            if err.key != key:  # the value has this arm's shape; the error is deeper inside it
                raise
    raise _mismatch(key, tp, value)


def _convert_tuple(tp: Any, value: Any, key: str) -> tuple[Any, ...]:
    if not isinstance(value, list | tuple):
        raise _mismatch(key, tp, value)
    args = typing.get_args(tp)
    if not args:
        return tuple(_plain(v) for v in value)
    if len(args) == 2 and args[1] is Ellipsis:
        args = (args[0],) * len(value)
    elif len(args) != len(value):
        raise _TypeMismatchError(f"expected {_type_name(tp)} ({len(args)} items), got {_show(value)}", key)
    return tuple(_convert(arg, v, f"{key}[{i}]") for i, (arg, v) in enumerate(zip(args, value, strict=True)))


def _convert_dict(tp: Any, value: Any, key: str) -> dict[Any, Any]:
    if not isinstance(value, Mapping):
        raise _mismatch(key, tp, value)
    key_tp, value_tp = typing.get_args(tp) or (Any, Any)
    return {_convert(key_tp, k, _join(key, k)): _convert(value_tp, v, _join(key, k)) for k, v in value.items()}


def _convert_dataclass(tp: type, value: Any, key: str) -> Any:
    if isinstance(value, tp):  # an already-built section: re-check it like plain data
        value = to_dict(value)
    return from_dict(tp, value, key)


# ----------------------------------------------------------------------------- plain data


def _plain(value: Any) -> Any:
    """A deep copy of `value` made of dicts, lists and scalars (tuples become lists)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def to_dict(obj: Any) -> dict[str, Any]:
    """The config dataclass `obj` as plain data for YAML or JSON; inverse of `from_dict`."""
    if not (dataclasses.is_dataclass(obj) and not isinstance(obj, type)):
        raise TypeError(f"to_dict expects a dataclass instance, got {_show(obj)}")
    return _plain(obj)


# ----------------------------------------------------------------------------- YAML


def _yaml_error(where: str, err: yaml.YAMLError) -> ConfigError:
    mark = getattr(err, "problem_mark", None)
    place = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark is not None else where
    problem = getattr(err, "problem", None) or str(err)
    return ConfigError(f"{place}: invalid YAML: {problem}")


def _read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yamlio.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise _yaml_error(str(path), err) from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values, got {type(data).__name__}")
    return data


def dumps(obj: Any) -> str:
    """The resolved config `obj` as YAML text, fields in declaration order."""
    return yamlio.safe_dump(to_dict(obj))


def dump(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Write the resolved config `obj` to `path` as YAML (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(obj), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[str, Any]:
    """`"planner.horizon=32"` -> `("planner.horizon", 32)`; the value is read as YAML."""
    key, eq, raw = text.partition("=")
    key = key.strip()
    if not eq or not key or any(not part.strip() for part in key.split(".")):
        raise ConfigError(f"malformed override {text!r}: expected dotted.key=VALUE")
    try:
        value = yamlio.safe_load(raw.strip())
    except yaml.YAMLError as err:
        raise _yaml_error(f"override {text!r}", err) from err
    return ".".join(part.strip() for part in key.split(".")), value


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of `data` with each `dotted.key=VALUE` override set; intermediate dicts are created.

    Nothing is validated here except the path itself: `from_dict` checks keys and types.
    """
    result = _plain(data)
    for text in overrides:
        key, value = parse_override(text)
        _set_path(result, key.split("."), value)
    return result


def _set_path(data: dict[str, Any], parts: list[str], value: Any) -> None:
    node = data
    for i, name in enumerate(parts[:-1]):
        child = node.setdefault(name, {})
        if not isinstance(child, dict):
            parent = ".".join(parts[: i + 1])
            raise ConfigError(f"is {_show(child)}, not a mapping, so {'.'.join(parts)} cannot be set", parent)
        node = child
    node[parts[-1]] = _plain(value)


def load[T](cls: type[T], source: str | os.PathLike[str] | Mapping[str, Any], overrides: Iterable[str] = ()) -> T:
    """Build `cls` from a YAML file (or a mapping), then the dotted overrides, and validate it."""
    overrides = list(overrides)
    data = source if isinstance(source, Mapping) else _read_yaml(source)
    data = apply_overrides(data, overrides)
    try:
        return from_dict(cls, data)
    except ConfigError as err:
        origin = "the given mapping" if isinstance(source, Mapping) else str(source)
        extra = f" with overrides {overrides}" if overrides else ""
        err.add_note(f"while loading {cls.__name__} from {origin}{extra}")
        raise


def replace_path[T](obj: T, key: str, value: Any) -> T:
    """A copy of the config `obj` with the field at dotted `key` set to `value`, checked again.

    `value` is checked against the field's annotation, and every section on the path is
    re-validated, so a programmatic override fails exactly like one given on the command line.
    """
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"malformed key {key!r}")
    return _replace(obj, parts, value, "")


def _replace(obj: Any, parts: list[str], value: Any, path: str) -> Any:
    name, here = parts[0], _join(path, parts[0])
    if not (dataclasses.is_dataclass(obj) and not isinstance(obj, type)):
        raise ConfigError(f"not a config section (got {_show(obj)})", path)
    schema = _schema(type(obj))
    if name not in schema:
        raise _unknown_key(path, name, schema)
    if len(parts) == 1:
        new = _convert(schema[name].tp, value, here)
    else:
        new = _replace(getattr(obj, name), parts[1:], value, here)
    out = dataclasses.replace(obj, **{name: new})
    _validate(out, path)
    return out
