"""River datasets and synthetic streams as recorded streams, deterministically.

Event ids are `<dataset>-<index>`; event times start at `start` and advance by
`interval` seconds per event; nothing depends on the wall clock.
"""

from __future__ import annotations

import datetime as dt
import inspect
import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from shared.messages import Event, MessageError

DEFAULT_START = 1_704_067_200.0  # 2024-01-01T00:00:00Z
DEFAULT_SYNTH_LIMIT = 10_000
DEFAULT_SEED = 42


class DatasetError(ValueError):
    pass


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    kind: str  # "bundled", "remote" or "synthetic"
    task: str
    n_samples: int | None


def _catalogue() -> dict[str, tuple[str, type]]:
    from river import datasets
    from river.datasets import base

    out: dict[str, tuple[str, type]] = {}
    for name in datasets.__all__:
        cls = getattr(datasets, name)
        if inspect.isclass(cls) and issubclass(cls, base.Dataset):
            kind = "remote" if issubclass(cls, base.RemoteDataset) else "bundled"
            out[name.lower()] = (kind, cls)
    for name in datasets.synth.__all__:
        out[name.lower()] = ("synthetic", getattr(datasets.synth, name))
    return out


def list_datasets() -> list[DatasetInfo]:
    infos = []
    for kind, cls in _catalogue().values():
        try:
            instance = cls()  # task and size are set by the constructor; nothing is read yet
        except TypeError:
            instance = cls
        task = getattr(instance, "task", None) or "?"
        n = getattr(instance, "n_samples", None) if kind != "synthetic" else None
        infos.append(DatasetInfo(cls.__name__, kind, str(task), n if isinstance(n, int) else None))
    return sorted(infos, key=lambda d: (d.kind, d.name))


def open_dataset(name: str, params: Mapping[str, Any] | None = None) -> tuple[str, Any]:
    """The canonical name and an iterable of (x, y)."""
    found = _catalogue().get(name.lower())
    if found is None:
        known = ", ".join(d.name for d in list_datasets() if d.kind != "remote")
        raise DatasetError(f"unknown dataset {name!r}; available: {known}")
    kind, cls = found
    kwargs = dict(params or {})
    if kind == "synthetic" and "seed" in inspect.signature(cls).parameters:
        kwargs.setdefault("seed", DEFAULT_SEED)
    if kind != "synthetic" and kwargs:
        raise DatasetError(f"{cls.__name__} takes no parameters")
    try:
        dataset = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"cannot create {cls.__name__}({kwargs}): {exc}") from exc
    if kind == "remote" and not getattr(dataset, "is_downloaded", False):
        raise DatasetError(
            f"{cls.__name__} is not bundled with River and must be downloaded, which this "
            "machine cannot do; use a bundled or synthetic dataset, or a recorded stream file"
        )
    return cls.__name__, dataset


def _value(v: Any) -> Any:
    if isinstance(v, dt.datetime):
        v = v if v.tzinfo else v.replace(tzinfo=dt.UTC)
        return v.timestamp()
    if isinstance(v, dt.date):
        return dt.datetime(v.year, v.month, v.day, tzinfo=dt.UTC).timestamp()
    item = getattr(v, "item", None)
    return item() if callable(item) and not isinstance(v, str | bytes) else v


def dataset_events(
    name: str,
    *,
    limit: int | None = None,
    params: Mapping[str, Any] | None = None,
    start: float = DEFAULT_START,
    interval: float = 1.0,
    entities: int = 1,
) -> Iterator[Event]:
    """Events of a dataset; datetimes become UTC epoch seconds, NumPy scalars plain numbers."""
    canonical, dataset = open_dataset(name, params)
    kind = _catalogue()[name.lower()][0]
    if kind == "synthetic" and limit is None:
        limit = DEFAULT_SYNTH_LIMIT
    prefix = canonical.lower()
    for i, (x, y) in enumerate(itertools.islice(dataset, limit)):
        if isinstance(y, dict):
            raise DatasetError(f"{canonical} has multi-output targets, which are not supported")
        record = {
            "event_id": f"{prefix}-{i:08d}",
            "entity": prefix if entities == 1 else f"{prefix}-e{i % entities}",
            "ts": start + i * interval,
            "data": {str(k): _value(v) for k, v in x.items()},
            "label": _value(y),
        }
        try:
            yield Event.from_wire(record)
        except MessageError as exc:
            raise DatasetError(f"{canonical} sample {i} is not a valid event: {exc}") from exc
