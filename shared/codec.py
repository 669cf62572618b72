"""MessagePack wire codec, plus JSON detection for what producers send.

Headwater writes MessagePack only; it reads MessagePack or JSON, decided per record by its
first byte, so a producer may use either without configuration.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

import msgpack
import msgspec

DEFAULT_MAX_BYTES = 1_048_576
UTF8_BOM = b"\xef\xbb\xbf"


class CodecError(ValueError):
    """A payload that cannot be decoded; `reason` is a stable, machine-readable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _encode_subclass(obj: Any) -> Any:
    """Subclasses of int, float and str (NumPy scalars, enums) go as their base type,
    as msgpack-python writes them; anything else is refused."""
    for base in (bool, int, float, str):
        if isinstance(obj, base):
            return base(obj)
    raise TypeError(f"cannot serialise an object of type {type(obj).__name__}")


_ENCODER = msgspec.msgpack.Encoder(enc_hook=_encode_subclass)

# Serialise one message; floats keep full double precision. msgspec writes the same bytes as
# msgpack-python (a test checks) about three times faster. Every record Headwater writes goes
# through here, so it is the encoder's own method, without a wrapper's call.
encode: Callable[[Any], bytes] = _ENCODER.encode


def decode(
    payload: bytes | None, max_bytes: int = DEFAULT_MAX_BYTES, *, json_constants: bool = False
) -> Any:
    """Decode MessagePack, or JSON when the payload starts like a JSON object.

    `json_constants` lets JSON's non-standard NaN/Infinity through as floats (what Python's
    json.dumps writes), for ingest to apply the pipeline's policy to them.
    """
    if payload is None:
        raise CodecError("empty", "record has no value")
    if len(payload) > max_bytes:
        raise CodecError(
            "too_large", f"record of {len(payload)} bytes exceeds the {max_bytes}-byte limit"
        )
    if not payload:
        raise CodecError("empty", "record value is empty")
    if payload[:3] == UTF8_BOM:  # JSON MAY start with one (RFC 8259); no MessagePack value does
        payload = payload[3:]
        if not payload.strip():
            raise CodecError("empty", "record value is a byte-order mark alone")
        return _decode_json(payload, json_constants)
    if payload.lstrip()[:1] in (b"{", b"["):
        return _decode_json(payload, json_constants)
    return _decode_msgpack(payload, json_constants)


def is_msgpack_map(payload: bytes) -> bool:
    """The payload starts as a MessagePack map (an event as Headwater writes it), not JSON."""
    return bool(payload) and (0x80 <= payload[0] <= 0x8F or payload[0] in (0xDE, 0xDF))


def _decode_msgpack(payload: bytes, json_constants: bool) -> Any:
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except msgpack.ExtraData as exc:
        # `42`, `true`, `"x"`, `null`: a JSON scalar reads as a MessagePack value with bytes
        # after it; decoded as JSON, the message layer names what it is (not_an_object).
        scalar = _json_scalar(payload, json_constants)
        if scalar is not _NOT_JSON:
            return scalar
        raise CodecError("bad_msgpack", "MessagePack value followed by extra bytes") from exc
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        detail = str(exc) or type(exc).__name__  # deep nesting raises with no text
        raise CodecError("bad_msgpack", f"invalid MessagePack: {detail}") from exc


_NOT_JSON = object()
_JSON_SCALAR = re.compile(rb'^\s*(?:-?[0-9]|"|true\b|false\b|null\b|NaN\b|-?Infinity\b)')


def _json_scalar(payload: bytes, constants: bool) -> Any:
    if not _JSON_SCALAR.match(payload):
        return _NOT_JSON
    try:
        return _decode_json(payload, constants)
    except CodecError:
        return _NOT_JSON


def _reject_constant(name: str) -> float:
    raise ValueError(f"non-finite number {name} is not allowed")


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _decode_json(payload: bytes, constants: bool = False) -> Any:
    try:
        obj = json.loads(payload, parse_constant=None if constants else _reject_constant)
    except UnicodeDecodeError as exc:
        raise CodecError("bad_json", f"JSON is not valid UTF-8: {exc}") from exc
    except (ValueError, RecursionError) as exc:
        raise CodecError("bad_json", f"invalid JSON: {exc}") from exc
    if _SURROGATE_ESCAPE.search(payload):
        check_text(obj)
    return obj


def check_text(obj: Any) -> None:
    """A \\ud800-style escape can decode to a lone surrogate, which no encoder can write
    back: such a record is refused here rather than failing later in an output."""
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CodecError(
            "bad_json", f"JSON holds an unpaired UTF-16 surrogate: {exc.reason}"
        ) from exc


def is_finite_number(value: object) -> bool:
    """True for ints and finite floats (bool excluded)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)
