"""Access to the JSON Schema files in `schemas/` at the repository root."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator


def schemas_dir() -> Path:
    """`$HEADWATER_SCHEMAS_DIR`, else `schemas/` beside the `shared` package."""
    override = os.environ.get("HEADWATER_SCHEMAS_DIR")
    path = Path(override) if override else Path(__file__).resolve().parent.parent / "schemas"
    if not path.is_dir():
        raise FileNotFoundError(
            f"schema folder {path} not found; install Headwater from its source tree "
            "(pip install -e .) or set HEADWATER_SCHEMAS_DIR"
        )
    return path


def schema_file(kind: str) -> Path:
    """`event/v1` -> schemas/event.v1.json."""
    return schemas_dir() / (kind.replace("/", ".") + ".json")


@cache
def load_schema(kind: str) -> dict[str, Any]:
    with schema_file(kind).open() as fh:
        schema: dict[str, Any] = json.load(fh)
    return schema


@cache
def validator(kind: str) -> Draft202012Validator:
    """A validator that resolves references between Headwater's schemas by their $id."""
    from referencing import Registry, Resource

    schema = load_schema(kind)
    Draft202012Validator.check_schema(schema)
    registry: Registry = Registry().with_resources(
        (s["$id"], Resource.from_contents(s))
        for s in (load_schema(p.stem.replace(".", "/", 1)) for p in schemas_dir().glob("*.json"))
    )
    return Draft202012Validator(schema, registry=registry)
