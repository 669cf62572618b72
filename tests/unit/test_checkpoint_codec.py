import pickle
import sys

import pytest

from shared.checkpoint.codec import (
    CheckpointFormatError,
    CheckpointTamperedError,
    dumps,
    loads,
)
from shared.checkpoint.keys import CheckpointKeys

K = CheckpointKeys(b"k")


def sign(blob: bytes, key: bytes) -> bytes:
    return CheckpointKeys(key).sign(blob)


class Boom:
    def __reduce__(self):
        return (pytest.fail, ("a tampered blob was unpickled",))


def test_round_trip():
    blob = dumps({"a": [1, 2.5]})
    assert loads(blob, sign(blob, b"k"), K) == {"a": [1, 2.5]}


def test_tampered_blob_is_refused_before_unpickling():
    evil = pickle.dumps(Boom())
    good_mac = sign(dumps({"a": 1}), b"k")
    with pytest.raises(CheckpointTamperedError, match="HMAC"):
        loads(evil, good_mac, K)
    blob = dumps({"a": 1})
    with pytest.raises(CheckpointTamperedError):
        loads(blob, sign(blob, b"other key"), K)
    flipped = bytes([blob[0] ^ 1]) + blob[1:]
    with pytest.raises(CheckpointTamperedError):
        loads(flipped, sign(blob, b"k"), K)


class Gone:
    """Stands for a state class that a later version renamed or removed."""


def test_authentic_blob_of_an_older_format_gives_a_clear_error(monkeypatch):
    blob = dumps({"state": Gone()})
    mac = sign(blob, b"k")
    monkeypatch.delattr(sys.modules[__name__], "Gone")
    with pytest.raises(CheckpointFormatError, match="cannot be read by this version") as info:
        loads(blob, mac, K, what="checkpoint x:v:3")
    assert "checkpoint x:v:3" in str(info.value)
    assert isinstance(info.value.__cause__, AttributeError)


def test_truncated_authentic_blob_gives_a_clear_error():
    blob = dumps({"a": list(range(100))})[:-7]
    with pytest.raises(CheckpointFormatError):
        loads(blob, sign(blob, b"k"), K)


def test_a_rotation_verifies_old_blobs_and_signs_new_ones_with_the_new_key():
    blob = dumps({"a": 1})
    signed_by_a = CheckpointKeys(b"key A").sign(blob)
    rotated = CheckpointKeys(b"key B", old=(b"key A",))
    assert loads(blob, signed_by_a, rotated) == {"a": 1}
    assert rotated.sign(blob) == CheckpointKeys(b"key B").sign(blob) != signed_by_a
    with pytest.raises(CheckpointTamperedError, match="HEADWATER_CHECKPOINT_OLD_KEYS"):
        loads(blob, signed_by_a, CheckpointKeys(b"key B"))


def test_a_blob_signed_with_an_unknown_key_is_refused_before_unpickling():
    evil = pickle.dumps(Boom())
    with pytest.raises(CheckpointTamperedError):
        loads(evil, CheckpointKeys(b"key C").sign(evil), CheckpointKeys(b"key B", old=(b"key A",)))


def test_keys_never_show_in_a_repr():
    assert "secret" not in repr(CheckpointKeys(b"secret", old=(b"old secret",)))
