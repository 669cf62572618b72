import enum
import math

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.codec import CodecError, decode, encode


def test_msgpack_round_trip_keeps_types_and_float_precision():
    obj = {"a": 0.1 + 0.2, "b": True, "c": "x", "d": None, "e": [1, 2], "f": 2**40}
    assert decode(encode(obj)) == obj
    assert decode(encode(obj))["a"] == 0.1 + 0.2


def test_json_is_detected_by_its_first_byte():
    assert decode(b'  {"event_id": "e1", "x": 1.5}') == {"event_id": "e1", "x": 1.5}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "empty"),
        (b"\xc1", "bad_msgpack"),  # never-used MessagePack byte
        (msgpack.packb({"a": 1})[:-1], "bad_msgpack"),  # truncated
        (msgpack.packb({"a": 1}) + b"\x00", "bad_msgpack"),  # trailing garbage
        (msgpack.packb({1: "int key"}), "bad_msgpack"),  # non-string map key
        (b'{"a": NaN}', "bad_json"),
        (b'{"a": Infinity}', "bad_json"),
        (b'{"a": 1', "bad_json"),
        (b'{"a": "\xff"}', "bad_json"),
    ],
)
def test_bad_payloads_raise_codec_error_with_reason(payload, reason):
    with pytest.raises(CodecError) as info:
        decode(payload)
    assert info.value.reason == reason


def test_none_value_is_empty():
    with pytest.raises(CodecError) as info:
        decode(None)  # type: ignore[arg-type]
    assert info.value.reason == "empty"


def test_oversized_payload_is_refused_before_decoding():
    with pytest.raises(CodecError) as info:
        decode(encode({"s": "x" * 2000}), max_bytes=1024)
    assert info.value.reason == "too_large"


def test_msgpack_nan_decodes_so_validation_can_reject_it():
    assert math.isnan(decode(encode({"x": float("nan")}))["x"])


def test_json_with_a_lone_surrogate_is_refused_but_pairs_are_fine():
    with pytest.raises(CodecError, match="unpaired UTF-16 surrogate"):
        decode(b'{"entity": "\\ud800"}')
    assert decode(b'{"entity": "\\ud83d\\ude00"}') == {"entity": "\U0001f600"}


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.binary(max_size=40)
)
_messages = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=10) | st.integers(-5, 5), inner, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=2000, deadline=None)
@given(_messages)
def test_encode_writes_the_bytes_msgpack_python_writes(obj):
    """encode() uses msgspec for speed; what it writes must not change with that."""
    assert encode(obj) == msgpack.packb(obj, use_bin_type=True)


def test_encode_takes_subclasses_as_their_base_type_and_refuses_other_objects():
    class Level(int, enum.Enum):
        HIGH = 2

    assert encode({"level": Level.HIGH}) == msgpack.packb({"level": 2})
    with pytest.raises(TypeError, match="cannot serialise an object of type object"):
        encode({"x": object()})
    with pytest.raises(OverflowError):
        encode(2**64)


@pytest.mark.parametrize(
    ("payload", "value"), [(b"42", 42), (b" true", True), (b'"e1"', "e1"), (b"null", None)]
)
def test_a_json_scalar_decodes_so_the_message_layer_names_it(payload, value):
    from shared.messages import Event, MessageError

    assert decode(payload) == value
    with pytest.raises(MessageError) as info:
        Event.from_wire(decode(payload))
    assert info.value.reason == "not_an_object"  # not bad_msgpack


def test_json_may_start_with_a_byte_order_mark():
    from shared.codec import is_msgpack_map

    bom = b"\xef\xbb\xbf"
    assert decode(bom + b'{"event_id": "e1"}') == {"event_id": "e1"}
    assert not is_msgpack_map(bom + b'{"event_id": "e1"}')  # ingest re-encodes it
    assert is_msgpack_map(encode({"event_id": "e1"}))
    with pytest.raises(CodecError) as info:
        decode(bom)
    assert info.value.reason == "empty"
