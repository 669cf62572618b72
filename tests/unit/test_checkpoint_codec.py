import pickle
import sys

import pytest

from shared.checkpoint.codec import (
    CheckpointFormatError,
    CheckpointTamperedError,
    dumps,
    loads,
    sign,
)


class Boom:
    def __reduce__(self):
        return (pytest.fail, ("a tampered blob was unpickled",))


def test_round_trip():
    blob = dumps({"a": [1, 2.5]})
    assert loads(blob, sign(blob, b"k"), b"k") == {"a": [1, 2.5]}


def test_tampered_blob_is_refused_before_unpickling():
    evil = pickle.dumps(Boom())
    good_mac = sign(dumps({"a": 1}), b"k")
    with pytest.raises(CheckpointTamperedError, match="HMAC"):
        loads(evil, good_mac, b"k")
    blob = dumps({"a": 1})
    with pytest.raises(CheckpointTamperedError):
        loads(blob, sign(blob, b"other key"), b"k")
    flipped = bytes([blob[0] ^ 1]) + blob[1:]
    with pytest.raises(CheckpointTamperedError):
        loads(flipped, sign(blob, b"k"), b"k")


class Gone:
    """Stands for a state class that a later version renamed or removed."""


def test_authentic_blob_of_an_older_format_gives_a_clear_error(monkeypatch):
    blob = dumps({"state": Gone()})
    mac = sign(blob, b"k")
    monkeypatch.delattr(sys.modules[__name__], "Gone")
    with pytest.raises(CheckpointFormatError, match="cannot be read by this version") as info:
        loads(blob, mac, b"k", what="checkpoint x:v:3")
    assert "checkpoint x:v:3" in str(info.value)
    assert isinstance(info.value.__cause__, AttributeError)


def test_truncated_authentic_blob_gives_a_clear_error():
    blob = dumps({"a": list(range(100))})[:-7]
    with pytest.raises(CheckpointFormatError):
        loads(blob, sign(blob, b"k"), b"k")
