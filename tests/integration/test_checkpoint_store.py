import time

import pytest
import redis

from shared.checkpoint.codec import CheckpointTamperedError
from shared.checkpoint.lease import Lease
from shared.checkpoint.store import CheckpointNotFoundError, CheckpointStore, StaleEpochError


@pytest.fixture
def client(stack):
    c = redis.Redis.from_url(stack.redis_url)
    yield c
    c.close()


def store(client, name, keep=3, key=b"k"):
    return CheckpointStore(client, name, "learner", key, keep=keep)


def test_write_load_history_and_trim(client):
    s = store(client, "p-history")
    epoch = s.new_epoch()
    with pytest.raises(CheckpointNotFoundError):
        s.load()
    versions = [s.write(epoch, {"n": i}, {"n": i}) for i in range(5)]
    assert versions == [1, 2, 3, 4, 5]
    info, state = s.load()
    assert (info.version, state) == (5, {"n": 4})
    assert [i.version for i in s.versions()] == [5, 4, 3]
    assert s.load(3)[1] == {"n": 2}
    with pytest.raises(CheckpointNotFoundError, match="only the last 3"):
        s.load(1)
    assert client.exists(f"{s.base}:v:1") == 0
    assert s.newest() == s.versions()[0]  # two reads, not one per version


def test_the_newest_is_none_before_the_first_and_read_again_when_dropped(client):
    s = store(client, "p-newest", keep=2)
    assert s.newest() is None
    epoch = s.new_epoch()
    s.write(epoch, {}, {"n": 1})
    s.write(epoch, {}, {"n": 2})
    client.delete(f"{s.base}:v:2")  # as if trimmed between the two reads
    newest = s.newest()
    assert newest is not None
    assert (newest.version, newest.meta["n"]) == (1, 1)


def test_a_stale_owner_cannot_overwrite_a_newer_checkpoint(client):
    old = store(client, "p-fence")
    new = store(client, "p-fence")
    old_epoch = old.new_epoch()
    old.write(old_epoch, "old-1", {})
    new_epoch = new.new_epoch()  # takeover
    new.write(new_epoch, "new-1", {})
    with pytest.raises(StaleEpochError, match="owner epoch is 2"):
        old.write(old_epoch, "stale", {})
    assert new.load()[1] == "new-1"
    assert [i.version for i in new.versions()] == [2, 1]


def test_a_tampered_blob_is_refused(client):
    s = store(client, "p-tamper")
    s.write(s.new_epoch(), {"weights": [1.0]}, {})
    client.hset(f"{s.base}:v:1", "blob", client.hget(f"{s.base}:v:1", "blob") + b"x")
    with pytest.raises(CheckpointTamperedError, match="HMAC"):
        s.load()
    with pytest.raises(CheckpointTamperedError):
        store(client, "p-tamper", key=b"another key").load(1)


def test_rollback_requests_name_a_kept_version(client):
    s = store(client, "p-rollback")
    epoch = s.new_epoch()
    s.write(epoch, 1, {})
    with pytest.raises(CheckpointNotFoundError):
        s.request_rollback("m", 9)
    s.request_rollback("m", 1)
    assert s.take_rollback()["version"] == 1
    assert s.take_rollback() is None


def test_lease_has_one_holder_and_expires(client):
    a = Lease(client, "lease-test", ttl_s=0.3)
    b = Lease(client, "lease-test", ttl_s=0.3)
    assert a.try_acquire()
    assert not b.try_acquire()
    assert a.renew()
    time.sleep(0.4)  # a stopped renewing (killed, paused)
    assert b.try_acquire()
    assert not a.renew()  # a learns it is no longer the owner
    a.release()  # does not free b's lease
    assert b.holder() == b.owner
