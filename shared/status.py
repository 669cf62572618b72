"""The status records services keep in Redis (shared/keys.py), typed once for writers and
readers: the learner's `learner:status` hash, and each ingest and features instance's.

A hash holds strings; `fields()` gives the hash, `parse()` reads one back, tolerating a
missing or unreadable field (a status from an older version) as its default.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

Fields = dict[str, str | int | float]
RawHash = Mapping[bytes, bytes] | Mapping[str, str]

# What the learner did about concept drift (services/learner/reaction.py), as counted.
REACTION_COUNTS = ("resets", "fallbacks_started", "fallbacks_promoted", "fallbacks_dropped")


def _text(raw: RawHash) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }


def _number(value: str | None, kind: type[int] | type[float]) -> int | float | None:
    if value is None:
        return None
    try:
        return kind(float(value)) if kind is int else float(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class LearnerStatus:
    """Written by the active learner about once a second, and as it stops."""

    role: str = "standby"  # "active" once it holds the lease, "stopped" in its last status
    updated_at: float = 0.0  # wall clock of the write
    model_version: int = 0  # the checkpoint version its models descend from
    events_seen: int = 0
    labels_learned: int = 0
    labels_unmatched: int = 0
    pending: int = 0  # predictions waiting for their label
    # the mean events scored between a prediction and its label (0: inline), over the
    # labels learned since the status before (the last known when none came since)
    label_lag_events: float = 0.0
    expired_defaulted: int = 0
    expired_unlabelled: int = 0
    paused: tuple[str, ...] = ()  # models an operator paused
    labels_skipped_paused: int = 0
    dead_letters: int = 0
    assigned_partitions: int = 0
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> name -> value
    # with a drift reaction: REACTION_COUNTS, and "trials" running
    reactions: dict[str, int] = field(default_factory=dict)

    def fields(self) -> Fields:
        out: Fields = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "paused":
                out["paused"] = ",".join(value)
            elif f.name == "metrics":
                for model, values in value.items():
                    for name, number in values.items():
                        out[f"metric:{model}:{name}"] = number
            elif f.name == "reactions":
                for name, count in value.items():
                    out[f"drift_{name}"] = count
            else:
                out[f.name] = value
        return out

    @classmethod
    def parse(cls, raw: RawHash) -> LearnerStatus | None:
        """None for an empty hash: no learner has written one."""
        text = _text(raw)
        if not text:
            return None
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in ("metrics", "reactions") or f.name not in text:
                continue
            if f.name == "role":
                values["role"] = text["role"]
            elif f.name == "paused":
                values["paused"] = tuple(m for m in text["paused"].split(",") if m)
            else:
                kind = float if f.name in ("updated_at", "label_lag_events") else int
                number = _number(text[f.name], kind)
                if number is not None:
                    values[f.name] = number
        metrics: dict[str, dict[str, float]] = {}
        reactions: dict[str, int] = {}
        for key, value in text.items():
            if key.startswith("metric:"):
                _, model, name = key.split(":", 2)
                number = _number(value, float)
                if number is not None:
                    metrics.setdefault(model, {})[name] = number
            elif key.startswith("drift_"):
                count = _number(value, int)
                if count is not None:
                    reactions[key[len("drift_") :]] = int(count)
        return cls(**values, metrics=metrics, reactions=reactions)

    def live(self, now: float | None = None, within_s: float = 30.0) -> bool:
        """Written in the last `within_s` seconds and not on stopping: the learner runs."""
        return self.role != "stopped" and (now or time.time()) - self.updated_at <= within_s


@dataclass(frozen=True)
class IngestStatus:
    """One ingest instance's totals over the input partitions it owns."""

    inputs: tuple[str, ...]  # "topic:partition"
    counts: Mapping[str, int]  # in, valid, deduplicated, dead_lettered, dlq:<reason>

    def fields(self) -> Fields:
        return {"inputs": ",".join(self.inputs), **self.counts}


@dataclass(frozen=True)
class FeaturesStatus:
    """One features instance: what it owns and how its windows fare."""

    partitions: tuple[int, ...]
    emitted: int
    dead_letters: int
    entities: int
    late: int
    expired: int

    def fields(self) -> Fields:
        return {
            "partitions": ",".join(str(p) for p in self.partitions),
            "emitted": self.emitted,
            "dead_letters": self.dead_letters,
            "entities": self.entities,
            "late": self.late,
            "expired": self.expired,
        }
