"""The cyclic collector, tuned for a hot path that allocates many short-lived containers.

Python's default (a young-generation pass every 700 net allocations) suits interactive
programs. A learner holds a batch of decoded records at a time, thousands of containers,
so it ran a pass every few records and promoted each batch towards the full passes: in a
learner bench that cost the model process 5-10% of its time and the service's thread
about as much. Almost all of these objects are freed by reference counting anyway; a
larger threshold only lets rare cyclic garbage wait longer (bounded by the threshold).
"""

from __future__ import annotations

import gc

HOT_PATH_THRESHOLDS = (100_000, 50, 100)


def hot_path_gc() -> tuple[int, int, int]:
    """Set the hot-path thresholds; returns the previous ones, for a service that shares
    its process (tests, benches) to put back when it closes."""
    previous: tuple[int, int, int] = gc.get_threshold()
    gc.set_threshold(*HOT_PATH_THRESHOLDS)
    return previous
