"""Pure parts of durable state: how a checkpoint is cut into the topic's records, and how
long a service's Redis client waits out an outage."""

from __future__ import annotations

import pytest

from shared.checkpoint.log import CHUNK_BYTES, chunk_count, chunk_key
from shared.redis_store import outage_retry


@pytest.mark.parametrize(
    ("size", "chunks"),
    [(0, 1), (1, 1), (CHUNK_BYTES, 1), (CHUNK_BYTES + 1, 2), (3 * CHUNK_BYTES, 3)],
)
def test_a_blob_takes_as_many_chunks_as_its_size_needs_and_at_least_one(size, chunks):
    assert chunk_count(size) == chunks


def test_chunk_keys_name_the_unit_the_copy_and_the_slice():
    assert chunk_key("headwater:p:learner:ckpt", "ab12", 3) == b"headwater:p:learner:ckpt#ab12#3"
    # a unit's chunks share its key as a prefix, which no other unit's key has
    assert not chunk_key("headwater:p:learner:ckpt2", "ab12", 0).startswith(
        b"headwater:p:learner:ckpt#"
    )


@pytest.mark.parametrize("seconds", [0.0, 1.0, 10.0, 60.0])
def test_a_redis_outage_is_retried_for_about_the_configured_time(seconds):
    retry = outage_retry(seconds)
    backoff = retry._backoff
    waited = sum(backoff.compute(i) for i in range(1, retry._retries + 1))
    assert seconds <= waited <= seconds + 1.0
