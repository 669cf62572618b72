import pickle

import pytest

from shared.checkpoint.codec import CheckpointTamperedError, dumps, loads, sign


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
