"""Aggregations over the values of one field in one window — pure functions.

Sums use math.fsum (exactly rounded), so a value never depends on the order in which
events were folded in; std is the population standard deviation around that mean.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from shared.spec.features import OPS


def _numbers(values: Sequence[Any]) -> list[float]:
    return [float(v) for v in values if type(v) is int or type(v) is float]


def aggregate(op: str, values: Sequence[Any]) -> Any:
    """`values`: the field's non-null values in the window, in (event time, arrival) order.
    A result too large for a float (sums of values near 1e308) is None, never an error."""
    try:
        return _aggregate(op, values)
    except OverflowError:
        return None


def _aggregate(op: str, values: Sequence[Any]) -> Any:
    if op == "count":
        return len(values)
    if op == "last":
        return values[-1] if values else None
    if op == "distinct_count":
        return len({(type(v).__name__, v) for v in values})
    nums = _numbers(values)
    if op == "sum":
        return math.fsum(nums)
    if not nums:
        return None
    if op == "mean":
        return math.fsum(nums) / len(nums)
    if op == "min":
        return min(nums)
    if op == "max":
        return max(nums)
    if op == "std":
        mean = math.fsum(nums) / len(nums)
        return math.sqrt(math.fsum((x - mean) ** 2 for x in nums) / len(nums))
    raise ValueError(f"unknown aggregation {op!r}")


def aggregate_all(ops: Sequence[str], values: Sequence[Any]) -> list[Any]:
    """Every op over one window's values, sharing the work (one pass, one fsum); equal to
    calling `aggregate` per op."""
    try:
        return _aggregate_all(ops, values)
    except OverflowError:
        return [aggregate(op, values) for op in ops]  # each op alone: only the overflowing are None


def _aggregate_all(ops: Sequence[str], values: Sequence[Any]) -> list[Any]:
    nums: list[float] | None = None
    total: float | None = None
    out = []
    for op in ops:
        if op in ("count", "last", "distinct_count"):
            out.append(aggregate(op, values))
            continue
        if nums is None:
            nums = _numbers(values)
            total = math.fsum(nums)
        assert total is not None
        if op == "sum":
            out.append(total)
        elif not nums:
            out.append(None)
        elif op == "mean":
            out.append(total / len(nums))
        elif op == "min":
            out.append(min(nums))
        elif op == "max":
            out.append(max(nums))
        elif op == "std":
            mean = total / len(nums)
            out.append(math.sqrt(math.fsum([(x - mean) ** 2 for x in nums]) / len(nums)))
        else:
            raise ValueError(f"unknown aggregation {op!r}")
    return out


def compile_ops(ops: Sequence[str]) -> Callable[[list[Any]], Sequence[Any]]:
    """`aggregate_all` for one fixed list of ops, with the work for that list chosen once:
    an empty window and one holding a single finite float are answered without a pass, and
    purely numeric ops share one. Results equal `aggregate_all`'s bit for bit (a property
    test checks, -0.0 included); callers must not mutate them."""
    ops = tuple(ops)
    for op in ops:
        if op not in OPS:
            raise ValueError(f"unknown aggregation {op!r}")
    empty = tuple(aggregate_all(ops, []))
    # one value v: counts 1, std 0.0; min, max and last v itself; sum and mean v + 0.0,
    # because fsum([-0.0]) is 0.0
    single: list[Any] = [
        1 if op in ("count", "distinct_count") else 0.0 if op == "std" else None for op in ops
    ]
    as_is = tuple(i for i, op in enumerate(ops) if op in ("min", "max", "last"))
    summed = tuple(i for i, op in enumerate(ops) if op in ("sum", "mean"))
    numeric = set(ops) <= set(_NUMERIC)
    pick = [_NUMERIC.index(op) for op in ops] if numeric else []
    every = ops == _NUMERIC  # `stats` itself is the answer
    wants_std = "std" in ops

    def run(values: list[Any]) -> Sequence[Any]:
        if len(values) == 1:
            v = values[0]
            if type(v) is float and v - v == 0.0:  # finite: no inf - inf in std
                if every:
                    return (1, v + 0.0, v + 0.0, v, v, 0.0)
                out = single.copy()
                for i in as_is:
                    out[i] = v
                for i in summed:
                    out[i] = v + 0.0
                return out
        elif not values:
            return empty
        if numeric:
            nums = _numbers(values)
            if nums:
                try:
                    total = math.fsum(nums)
                    mean = total / len(nums)
                    std = (
                        math.sqrt(math.fsum([(x - mean) ** 2 for x in nums]) / len(nums))
                        if wants_std
                        else None
                    )
                except OverflowError:
                    return aggregate_all(ops, values)
                stats = (len(values), total, mean, min(nums), max(nums), std)
                return stats if every else [stats[i] for i in pick]
        return aggregate_all(ops, values)

    return run


_NUMERIC = ("count", "sum", "mean", "min", "max", "std")  # the order of `stats` above
