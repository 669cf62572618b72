"""Who owns which checkpointed state, under which epoch.

A unit of state (one input partition's, or the learner's whole pipeline's) has one owner
at a time. Taking it claims a new epoch in its checkpoint store, which fences every older
owner, then restores the newest checkpoint or starts fresh; persisting writes each unit's
state with its next input offsets in one fenced step, and a stale owner gets `FencedError`.
What a unit holds, and how it is saved and read back, is the service's `StateKind`.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from shared.checkpoint.codec import CheckpointFormatError
from shared.checkpoint.store import (
    CheckpointInfo,
    CheckpointNotFoundError,
    CheckpointStore,
    StaleEpochError,
    StoreResetError,
)

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
S = TypeVar("S")
Offsets = dict[tuple[str, int], int]  # (topic, partition) -> the next offset to read

FORMAT = "format"  # the checkpoint's meta field naming its state format
UNVERSIONED = 1  # checkpoints written before formats were recorded hold format 1


class FencedError(RuntimeError):
    """Another instance took over state this one owned: it must stop acting as its owner."""


class StateLostError(FencedError):
    """Redis lost the state while this instance owned it (nobody took over): the service
    starts again from its checkpoints, which the checkpoint log puts back."""


class FreshStartRefusedError(RuntimeError):
    """No checkpoint anywhere, yet the inputs show earlier progress: starting fresh would
    process the whole stream again under new lineage."""


# The offsets a service's consumer group committed on the given input partitions.
Committed = Callable[[list[tuple[str, int]]], dict[tuple[str, int], int]]


@dataclass(eq=False, slots=True)
class Owned(Generic[S]):
    """A unit of state this instance owns."""

    store: CheckpointStore
    epoch: int
    state: S
    next_offset: int  # the next input record to apply (a unit of one input partition)
    unsaved: int = 0  # records applied since the last checkpoint
    restored_version: int | None = None


class StateKind(ABC, Generic[K, S]):
    """What differs between services: the state a unit holds and how it is saved."""

    service: str  # names the owner in logs and errors
    unit: str = "partition"  # what a unit of state is, in logs
    format: int = UNVERSIONED  # the state format this code writes
    oldest_format: int = UNVERSIONED  # the oldest it restores

    @abstractmethod
    def store(self, key: K) -> CheckpointStore: ...

    @abstractmethod
    def fresh(self, key: K) -> tuple[S, int]:
        """A new unit's state and the next offset to read."""

    def thaw(self, key: K, saved: Any, info: CheckpointInfo) -> tuple[S, int]:
        """The state and next offset from what `freeze` saved (HMAC verified already)."""
        state, next_offset = saved
        return state, next_offset

    def freeze(self, key: K, owned: Owned[S]) -> Any:
        """What is pickled for the unit: by default the state and the next offset."""
        return owned.state, owned.next_offset

    def meta(self, key: K, owned: Owned[S]) -> dict[str, Any]:
        """The checkpoint's metadata, readable without unpickling (`headwater models`)."""
        return {"next_offset": owned.next_offset}

    def offsets(self, key: K, owned: Owned[S]) -> Offsets:
        """The unit's next input offsets: by default, one partition's, named by the key."""
        return {key: owned.next_offset}  # type: ignore[dict-item]

    def inputs(self, key: K) -> list[tuple[str, int]]:
        """The input partitions whose progress the unit's state records."""
        return [key]  # type: ignore[list-item]

    def persisted(self, key: K, owned: Owned[S], version: int) -> None:
        """Called after the unit's checkpoint is written."""

    def describe(self, key: K) -> str:
        if isinstance(key, tuple) and len(key) == 2:
            return f"{key[0]}[{key[1]}]"
        return str(key)


class Ownership(Generic[K, S]):
    """The units this instance owns, keyed (for a partitioned service) by (topic, partition)."""

    def __init__(
        self, kind: StateKind[K, S], committed: Committed | None = None, reset: bool = False
    ) -> None:
        """`committed`: asked when a unit has no checkpoint, for evidence of earlier
        progress; `reset` (`--reset`): a unit Redis has no checkpoint of starts fresh, its
        copy on the checkpoint topic and that evidence notwithstanding."""
        self.kind = kind
        self.committed = committed
        self.reset = reset
        self.owned: dict[K, Owned[S]] = {}
        self.get = self.owned.get  # bound once: looked up per record

    def __contains__(self, key: object) -> bool:
        return key in self.owned

    def keys(self) -> list[K]:
        return list(self.owned)

    def take(self, key: K) -> Owned[S]:
        """New epoch first (fencing any older owner), then the newest checkpoint or a fresh
        state. A unit owned already is returned as it is."""
        owned = self.owned.get(key)
        if owned is not None:
            return owned
        kind = self.kind
        store = kind.store(key)
        recovered = None if self.reset else store.recover()
        epoch = store.new_epoch()
        try:
            info, saved = store.load()
        except CheckpointNotFoundError:
            self._refuse_fresh_start(key, store)
            state, next_offset = kind.fresh(key)
            version = None
        else:
            self._check_format(key, store, info)
            state, next_offset = kind.thaw(key, saved, info)
            version = info.version
        owned = Owned(store, epoch, state, next_offset, restored_version=version)
        self.owned[key] = owned
        log.info(
            "%s %s",
            kind.unit,
            "taken, no checkpoint yet"
            if version is None
            else "restored from the checkpoint topic"
            if recovered is not None
            else "restored",
            extra={
                "fields": {
                    "service": kind.service,
                    "unit": kind.describe(key),
                    "epoch": epoch,
                    "restored_version": version,
                    "next_offset": next_offset,
                }
            },
        )
        return owned

    def _refuse_fresh_start(self, key: K, store: CheckpointStore) -> None:
        """Raise when the consumer group committed offsets on the unit's inputs: its state
        existed and is lost (Redis and the checkpoint topic hold none)."""
        if self.committed is None:
            return
        progress = {tp: o for tp, o in self.committed(self.kind.inputs(key)).items() if o > 0}
        if not progress:
            return
        where = ", ".join(f"{t}[{p}] at offset {o}" for (t, p), o in sorted(progress.items()))
        kind = self.kind
        if self.reset:
            log.warning(
                "state lost; starting fresh as asked (--reset)",
                extra={"fields": {"unit": kind.describe(key), "committed": where}},
            )
            return
        raise FreshStartRefusedError(
            f"state lost: {kind.service} has no checkpoint of {kind.describe(key)} in Redis "
            f"({store.base}:*) nor on the checkpoint topic, yet its consumer group committed "
            f"{where}: the state that processing built is gone. Starting fresh would process "
            "those records again under new lineage. Restore Redis (or the checkpoint topic) "
            "from a backup, or run the service with --reset (HEADWATER_RESET_STATE=true) to "
            "start over deliberately."
        )

    def _check_format(self, key: K, store: CheckpointStore, info: CheckpointInfo) -> None:
        kind = self.kind
        found = int(info.meta.get(FORMAT, UNVERSIONED))
        if kind.oldest_format <= found <= kind.format:
            return
        newer = found > kind.format
        raise CheckpointFormatError(
            f"{kind.service} checkpoint {store.base}:v:{info.version} of {kind.describe(key)} "
            f"holds state format {found}; this version of Headwater reads formats "
            f"{kind.oldest_format} to {kind.format}. "
            + (
                "It was written by a newer Headwater: run that version."
                if newer
                else "Replay the inputs from the start: remove the service's checkpoints "
                f"({store.base}:*) and run it with --reset to start over deliberately."
            )
        )

    def let_go(self, keys: Iterable[K]) -> None:
        """Forget units without a checkpoint (revoked or lost: the next owner restores)."""
        for key in keys:
            self.owned.pop(key, None)

    def unsaved(self) -> int:
        """Records applied and not yet checkpointed (read by the metrics thread too)."""
        return sum(owned.unsaved for owned in list(self.owned.values()))

    def persist(self, keys: Iterable[K], reason: str) -> dict[K, int]:
        """Each unit's state with its next offsets, one fenced write each; the versions."""
        kind = self.kind
        versions = {}
        for key in keys:
            owned = self.owned.get(key)
            if owned is None:
                continue
            meta = {"reason": reason, FORMAT: kind.format, **kind.meta(key, owned)}
            try:
                version = owned.store.write(owned.epoch, kind.freeze(key, owned), meta)
            except StoreResetError as exc:
                raise StateLostError(
                    f"state lost: Redis no longer holds {kind.service}'s state of "
                    f"{kind.describe(key)} ({exc}): Redis restarted without persistence, or "
                    "was replaced"
                ) from exc
            except StaleEpochError as exc:
                raise FencedError(
                    f"{kind.service} {kind.describe(key)} was taken over by another "
                    f"{kind.service} instance: {exc}"
                ) from exc
            owned.unsaved = 0
            kind.persisted(key, owned, version)
            versions[key] = version
        return versions

    def offsets(self, keys: Iterable[K]) -> Offsets:
        out: Offsets = {}
        for key in keys:
            owned = self.owned.get(key)
            if owned is not None:
                out.update(self.kind.offsets(key, owned))
        return out

    def checkpoint_bytes(self) -> int:
        """The size of the owned units' last checkpoints, together."""
        return sum(owned.store.last_bytes for owned in self.owned.values())
