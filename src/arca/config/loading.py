"""Reading configs: YAML files deep-merged in order, dotted ``--set`` overrides, type coercion
against the dataclasses (unknown keys and wrong types name the key and the file), dumping."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from arca.config.checks import validate
from arca.config.ranges import short
from arca.config.sections import Config, ConfigError, to_dict

# ----------------------------------------------------------------------------- (de)serialization
FLOAT_STRING = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def did_you_mean(word: Any, known: Any) -> str:
    """`` (did you mean 'lr'?)`` for the closest of ``known`` to ``word``, or ``""`` when none is close."""
    close = difflib.get_close_matches(str(word), [str(k) for k in known], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against type annotation ``tp`` (ints are accepted where floats are)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, source)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{source}: key '{key}' has value {short(value)}, expected {tp}")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key, source)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{source}: key '{key}' must be a list, got {type(value).__name__} {short(value)}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(v, item_tp, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: key '{key}' must be a mapping, got {type(value).__name__}")
        return dict(value)
    if tp is Any:
        return value
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            hint = did_you_mean(value, allowed)
            raise ConfigError(f"{source}: key '{key}' must be one of {list(allowed)}, got {short(value)}{hint}")
        return value
    if tp is float:
        if isinstance(value, str) and FLOAT_STRING.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: key '{key}' must be a number, got {type(value).__name__} {short(value)}")
        try:
            return float(value)
        except OverflowError:  # an int of hundreds of digits
            raise ConfigError(f"{source}: key '{key}' is too large a number: {short(value)}") from None
    if tp is int or tp is bool or tp is str:
        if type(value) is not tp:
            raise ConfigError(
                f"{source}: key '{key}' must be {_type_name(tp)}, got {type(value).__name__} {short(value)}"
            )
        if tp is str and any(ord(c) < 32 or ord(c) == 127 for c in value):
            # names, paths, ids and methods: a control character is a mistake or an attack
            raise ConfigError(f"{source}: key '{key}' holds a control character: {short(value)}")
        return value
    raise ConfigError(f"{source}: key '{key}' has unsupported type {tp}")


def _build(cls: type, raw: Any, prefix: str, source: str) -> Any:
    if not isinstance(raw, dict):
        where = f"key '{prefix}'" if prefix else "the top level"
        raise ConfigError(f"{source}: {where} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            path = f"{prefix}.{key}" if prefix else str(key)
            hint = did_you_mean(key, names)
            raise ConfigError(f"{source}: unknown key '{path}'{hint}; allowed here: {', '.join(sorted(names))}")
    kwargs = {}
    for key, value in raw.items():
        path = f"{prefix}.{key}" if prefix else key
        kwargs[key] = _coerce(value, hints[key], path, source)
    return cls(**kwargs)


def check_keys(raw: dict, source: str) -> None:
    """Key and type errors of one layer of config (a file, or ``--config`` values), named with ``source``."""
    _build(Config, raw, "", source)


def from_dict(raw: dict, source: str = "<config>") -> Config:
    """Build and validate a ``Config`` from plain data; ``source`` names the origin in errors."""
    cfg = _build(Config, raw, "", source)
    validate(cfg, source)
    return cfg


# ----------------------------------------------------------------------------- loading
def deep_merge(base: dict, update: dict) -> dict:
    """Recursive dict update, as Snakemake merges config files (lists are replaced)."""
    out = dict(base)
    for k, v in update.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without YAML 1.1's surprises: anchors and aliases (a few lines can
    expand to gigabytes), duplicate keys (the last one would win silently) and base-60 or
    leading-zero octal numbers (``3:00`` is 180, ``010`` is 8) are refused, each at once."""

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(
                None, None, "anchors and aliases (&name, *name) are not allowed here", event.start_mark
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is not None and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {short(key)}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node):
        text = str(node.value).replace("_", "")
        if ":" in text or re.fullmatch(r"[-+]?0[0-7]+", text):
            raise yaml.constructor.ConstructorError(
                None, None, f"{short(node.value)} is a YAML 1.1 base-60 or octal number; quote it", node.start_mark
            )
        return super().construct_yaml_int(node)

    def construct_yaml_float(self, node):
        if ":" in str(node.value):
            raise yaml.constructor.ConstructorError(
                None, None, f"{short(node.value)} is a YAML 1.1 base-60 number; quote it", node.start_mark
            )
        return super().construct_yaml_float(node)


StrictLoader.add_constructor("tag:yaml.org,2002:int", StrictLoader.construct_yaml_int)
StrictLoader.add_constructor("tag:yaml.org,2002:float", StrictLoader.construct_yaml_float)


def strict_load(text: str, name: str = "<text>") -> Any:
    loader = StrictLoader(text)
    loader.name = name  # where the error marks point, instead of "<unicode string>"
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _parse_scalar(text: str, where: str = "--set") -> Any:
    """An override's value, read as YAML; ``1e-4`` (a string to YAML 1.1) is read as a number."""
    try:
        value = strict_load(text)
    except yaml.MarkedYAMLError as e:
        if isinstance(e, (yaml.constructor.ConstructorError, yaml.composer.ComposerError)):
            raise ConfigError(f"{where}: {e.problem}") from None
        return text  # not YAML at all: the text itself, e.g. a path with a colon
    except yaml.YAMLError:
        return text
    if isinstance(value, str) and FLOAT_STRING.fullmatch(value.strip()):
        return float(value)
    return value


def parse_override(entry: str, source: str = "--set") -> tuple[str, Any]:
    """``"train.lr=1e-4"`` -> ``("train.lr", 1e-4)``; the value is read as YAML."""
    if not isinstance(entry, str) or "=" not in entry:
        raise ConfigError(f"{source} {entry!r}: expected key.path=value, e.g. train.lr=1e-4")
    key, text = entry.split("=", 1)
    key = key.strip()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", key):
        raise ConfigError(f"{source} {entry!r}: {key!r} is not a dotted key path like train.lr")
    return key, _parse_scalar(text, f"{source} {short(entry)}")


def apply_overrides(raw: dict, overrides: list[str], source: str = "--set") -> dict:
    """A copy of the plain config ``raw`` with ``key.path=value`` overrides set (keys checked later)."""
    out = copy.deepcopy(raw)
    for entry in overrides:
        key, value = parse_override(entry, source)
        set_dotted(out, key, value, source=source)
    return out


def set_dotted(raw: dict, key: str, value: Any, source: str) -> None:
    parts = key.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node.get(part), dict):
            node[part] = {} if part not in node else node[part]
            if not isinstance(node[part], dict):
                raise ConfigError(f"{source}: key '{'.'.join(parts[: i + 1])}' is not a section")
        node = node[part]
    last = parts[-1]
    if isinstance(value, dict) and isinstance(node.get(last), dict):
        # `--set train={}` or `--set credit={method: x}` changes the keys it names, never resets a section
        node[last] = deep_merge(node[last], value)
    else:
        node[last] = value


YTE_KEY = "__use_yte__"
# A config file of differences names the file it is layered on: `base: default.yaml` (relative to
# its own folder). Reading it gives the base's content with its own keys merged over it.
BASE_KEY = "base"


def read_yaml(path: Path) -> dict:
    """A config file as a dict, its ``base:`` (if any) read first and merged under it."""
    path = Path(path)
    raw = _read_plain_yaml(path)
    base = base_of(path, raw)
    if base is None:
        return raw
    return deep_merge(read_yaml(base), {k: v for k, v in raw.items() if k != BASE_KEY})


def base_of(path: Path, raw: dict | None = None) -> Path | None:
    """The file ``path`` names as its ``base:`` (None when it is complete on its own)."""
    raw = _read_plain_yaml(Path(path)) if raw is None else raw
    if BASE_KEY not in raw:
        return None
    name = raw[BASE_KEY]
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{path}: key '{BASE_KEY}' must name a config file, got {name!r}")
    base = Path(path).parent / name
    if base.resolve() == Path(path).resolve() or BASE_KEY in _read_plain_yaml(base):
        raise ConfigError(f"{path}: key '{BASE_KEY}' must name a complete config file (one without '{BASE_KEY}')")
    return base


def _read_plain_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = strict_load(path.read_text(encoding="utf-8"), str(path))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text: {e}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    if YTE_KEY in raw:  # Snakemake would run it as a YTE template: Python code
        raise ConfigError(f"{path}: key '{YTE_KEY}' is refused: arca reads config files as plain YAML, never as code")
    return raw


def check_file(path: str | Path) -> dict:
    """One config file read and its keys and types checked, errors naming the file."""
    raw = read_yaml(Path(path))
    _build(Config, raw, "", str(path))
    return raw


def load_config(paths: list[str | Path] | str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load YAML files (deep-merged in order) and apply ``key.path=value`` overrides.

    Each file is checked on its own first so that an error names the file it came from.
    """
    if paths is None:
        paths = []
    if isinstance(paths, (str, Path)):
        paths = [paths]
    merged: dict = {}
    for p in paths:
        raw = check_file(p)  # key and type errors, named with this file
        merged = deep_merge(merged, raw)
    source = " + ".join(str(p) for p in paths) or "<defaults>"
    merged = apply_overrides(merged, list(overrides or []))
    if overrides:
        source = f"{source} (with --set)"
    return from_dict(merged, source=source)


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
