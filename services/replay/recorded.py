"""Recorded streams: JSON Lines (gzipped when the name ends in .gz), one event/v1 per line."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, cast

from shared.codec import CodecError, check_text
from shared.messages import Event, MessageError

MAX_LINE_CHARS = 1_048_576


class RecordedStreamError(ValueError):
    """Names the file and the 1-based line of the problem (0: the file as a whole)."""

    def __init__(self, path: Path, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}" if line else f"{path}: {message}")
        self.path = path
        self.line = line


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed (numbers must be finite)")


@contextmanager
def _open(path: Path, mode: str) -> Iterator[IO[str]]:
    if path.suffix == ".gz":
        with gzip.open(path, mode + "t", encoding="utf-8") as gz:
            yield cast(IO[str], gz)
    else:
        with path.open(mode, encoding="utf-8") as fh:
            yield fh


def read_events(path: str | Path) -> Iterator[Event]:
    """Every event of the file, in order; the first bad line raises RecordedStreamError."""
    for _, event in numbered_events(path):
        yield event


def numbered_events(path: str | Path) -> Iterator[tuple[int, Event]]:
    """(line number, event) pairs; blank lines are skipped."""
    path = Path(path)
    try:
        with _open(path, "r") as fh:
            for line_no, line in enumerate(fh, start=1):
                if line.strip():
                    yield line_no, parse_line(path, line_no, line)
    except (OSError, EOFError) as exc:
        raise RecordedStreamError(path, 0, f"cannot read: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise RecordedStreamError(path, 0, f"not UTF-8 text: {exc}") from exc


def parse_line(path: Path, line_no: int, line: str) -> Event:
    if len(line) > MAX_LINE_CHARS:
        raise RecordedStreamError(path, line_no, f"line longer than {MAX_LINE_CHARS} characters")
    try:
        obj = json.loads(line, parse_constant=_reject_constant)
        if "\\u" in line:
            check_text(obj)
    except CodecError as exc:
        raise RecordedStreamError(path, line_no, str(exc)) from exc
    except (ValueError, RecursionError) as exc:
        raise RecordedStreamError(path, line_no, f"not valid JSON: {exc}") from exc
    try:
        return Event.from_wire(obj)
    except MessageError as exc:
        raise RecordedStreamError(
            path, line_no, f"not a valid event ({exc.reason}): {exc}"
        ) from exc


def scan(path: str | Path) -> int:
    """Validate a whole file before anything is sent; returns its event count."""
    seen: set[str] = set()
    path = Path(path)
    for line_no, event in numbered_events(path):
        if event.event_id in seen:
            raise RecordedStreamError(path, line_no, f"duplicate event_id {event.event_id!r}")
        seen.add(event.event_id)
    if not seen:
        raise RecordedStreamError(path, 0, "holds no events")
    return len(seen)


def to_line(event: Event) -> str:
    return json.dumps(event.to_wire(), separators=(",", ":"), allow_nan=False) + "\n"


def write_events(path: str | Path, events: Iterable[Event]) -> int:
    """Write atomically: a partial file never replaces a good one."""
    path = Path(path)
    if not path.parent.is_dir():
        raise RecordedStreamError(path, 0, f"folder {path.parent} does not exist")
    tmp = path.with_name(path.name + ".partial" + (".gz" if path.suffix == ".gz" else ""))
    count = 0
    try:
        with _open(tmp, "w") as fh:
            for event in events:
                fh.write(to_line(event))
                count += 1
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return count
