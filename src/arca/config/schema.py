"""The JSON Schema of a config file, generated from the dataclasses (for editors and tools)."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal

import yaml

from arca.config.loading import FLOAT_STRING
from arca.config.sections import Config

# ----------------------------------------------------------------------------- JSON schema
SCHEMA_HEADER = """\
# JSON Schema of the experiment config, GENERATED from the dataclasses of src/arca/config/sections.py by
# arca.config.json_schema() (tests/test_workflow.py checks that this file is current). It is for
# editors and other tools; the pipeline itself checks a config by loading it (types, closed sets,
# unknown keys) and with arca.config.validate and arca.credit.check_config (values). No defaults
# here: the dataclasses are the one place defaults live.
"""


def _schema_of(tp: Any) -> dict:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_schema_of(a) for a in typing.get_args(tp)]}
    if origin is Literal:
        return {"enum": list(typing.get_args(tp))}
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        props = {f.name: _schema_of(hints[f.name]) for f in dataclasses.fields(tp)}
        doc = (tp.__doc__ or "").strip().split("\n")[0]
        return {"type": "object", "description": doc, "additionalProperties": False, "properties": props}
    if origin is list:
        return {"type": "array", "items": _schema_of(typing.get_args(tp)[0])}
    if origin is dict:
        return {"type": "object"}
    if tp is float:  # as the loader: YAML 1.1 reads 1e-4 (no dot) as a string
        return {"anyOf": [{"type": "number"}, {"type": "string", "pattern": FLOAT_STRING.pattern}]}
    simple = {int: "integer", bool: "boolean", str: "string", type(None): "null"}
    return {"type": simple[tp]} if tp in simple else {}


def json_schema() -> dict:
    """The JSON Schema (draft 2020-12) of a config file, derived from the dataclasses."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "ARCA experiment config",
        **_schema_of(Config),
    }


def json_schema_text() -> str:
    """``workflow/schemas/config.schema.yaml`` as it should read."""
    return SCHEMA_HEADER + yaml.safe_dump(json_schema(), sort_keys=False, width=110)
