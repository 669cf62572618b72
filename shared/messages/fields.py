"""Field checks shared by every message type; each raises MessageError naming the field."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from shared.messages.errors import MessageError

MAX_ID_LEN = 256
MAX_STRING_VALUE_LEN = 65_536
MAX_DATA_FIELDS = 10_000

Scalar = int | float | str | bool | None


def require_mapping(obj: Any, kind: str) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise MessageError("not_an_object", f"{kind} must be an object, got {type_name(obj)}")
    return obj


def check_fields(
    obj: Mapping[str, Any], kind: str, required: tuple[str, ...], allowed: frozenset[str]
) -> None:
    for name in required:
        if name not in obj:
            raise MessageError("missing_field", f"{kind}: required field {name!r} is missing")
    unknown = [k for k in obj if k not in allowed]
    if unknown:
        raise MessageError("unknown_field", f"{kind}: unknown field {str(unknown[0])[:64]!r}")


def type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


INT_MIN, INT_MAX = -(2**63), 2**64 - 1  # what MessagePack can carry


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def finite_number(value: Any, field: str) -> float | int:
    if not is_number(value):
        raise MessageError("wrong_type", f"{field} must be a number, got {type_name(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise MessageError("non_finite", f"{field} must be finite, got {value}")
    if isinstance(value, int) and not INT_MIN <= value <= INT_MAX:
        raise MessageError("bad_value", f"{field} is an integer outside the 64-bit range")
    return value  # type: ignore[no-any-return]


def id_string(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise MessageError("wrong_type", f"{field} must be a string, got {type_name(value)}")
    if not value:
        raise MessageError("bad_value", f"{field} must not be empty")
    if len(value) > MAX_ID_LEN:
        raise MessageError("too_long", f"{field} is longer than {MAX_ID_LEN} characters")
    return value


def timestamp(value: Any, field: str) -> float:
    ts = finite_number(value, field)
    if ts < 0:
        raise MessageError("bad_value", f"{field} must be >= 0 (UTC epoch seconds), got {ts}")
    return float(ts)


def statistics(value: Any, field: str) -> dict[str, float]:
    """A detector's figures: names to finite numbers."""
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and is_number(v) and math.isfinite(v) for k, v in value.items()
    ):
        raise MessageError("wrong_type", f"{field} must map names to finite numbers")
    return {k: float(v) for k, v in value.items()}


def non_negative_int(value: Any, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise MessageError("wrong_type", f"{field} must be an integer, got {type_name(value)}")
    if value > INT_MAX:
        raise MessageError("bad_value", f"{field} is an integer outside the 64-bit range")
    if value < 0:
        raise MessageError("bad_value", f"{field} must be >= 0, got {value}")
    return value


def feature_value(value: Any, field: str) -> Scalar:
    if value is None or isinstance(value, bool):
        return value
    if is_number(value):
        return finite_number(value, field)
    if isinstance(value, str):
        if len(value) > MAX_STRING_VALUE_LEN:
            raise MessageError(
                "too_long", f"{field} is longer than {MAX_STRING_VALUE_LEN} characters"
            )
        return value
    raise MessageError(
        "wrong_type", f"{field} must be a number, string, boolean or null, got {type_name(value)}"
    )


def label_value(value: Any, field: str, *, nullable: bool) -> Scalar:
    if value is None:
        if nullable:
            return None
        raise MessageError("wrong_type", f"{field} must not be null")
    if isinstance(value, bool):
        return value
    if is_number(value):
        return finite_number(value, field)
    if isinstance(value, str):
        return id_string(value, field)
    raise MessageError(
        "wrong_type", f"{field} must be a number, string or boolean, got {type_name(value)}"
    )


def feature_map(value: Any, field: str) -> dict[str, Scalar]:
    if not isinstance(value, Mapping):
        raise MessageError("wrong_type", f"{field} must be an object, got {type_name(value)}")
    if len(value) > MAX_DATA_FIELDS:
        raise MessageError("too_large", f"{field} has more than {MAX_DATA_FIELDS} fields")
    # Hot path: exact-type checks, commonest type first; anything unusual takes the thorough
    # route below, which names what is wrong.
    for key, item in value.items():
        if type(key) is not str or not key or len(key) > MAX_ID_LEN:
            return _checked_feature_map(value, field)
        kind = type(item)
        if kind is float:
            if item - item != 0:  # NaN and infinities
                return _checked_feature_map(value, field)
        elif kind is str:
            if len(item) > MAX_STRING_VALUE_LEN:
                return _checked_feature_map(value, field)
        elif kind is int:
            if not INT_MIN <= item <= INT_MAX:
                return _checked_feature_map(value, field)
        elif kind is not bool and item is not None:
            return _checked_feature_map(value, field)
    return value if type(value) is dict else dict(value)


def _checked_feature_map(value: Mapping[Any, Any], field: str) -> dict[str, Scalar]:
    out: dict[str, Scalar] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise MessageError("wrong_type", f"{field} keys must be strings, got {type_name(key)}")
        if not key or len(key) > MAX_ID_LEN:
            raise MessageError("bad_value", f"{field} key must have 1 to {MAX_ID_LEN} characters")
        out[key] = feature_value(item, f"{field}.{key[:64]}")
    return out
