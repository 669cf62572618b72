"""CPU time per event of the processes a benchmark runs: where a service's time goes.

A ratio says how fast a service is against its baseline; these figures say why. On a
machine of N cores, a pipeline of processes runs no faster than its busiest process, nor
than their total CPU per event divided by N, whatever its code does with the rest.
Read from /proc (Linux); elsewhere the figures are None.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process, all its threads; None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)", which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU of named processes between `start` and `stop`, per event processed meanwhile.
    `pids` names them when the span starts (a service may start its processes late)."""

    def __init__(self, pids: Callable[[], dict[str, int | None]]) -> None:
        self._pids = pids
        self.pids: dict[str, int | None] = {}
        self._started: dict[str, float | None] = {}
        self.per_event_us: dict[str, float | None] = {}

    def start(self) -> None:
        self.pids = self._pids()
        self._started = {name: _read(pid) for name, pid in self.pids.items()}

    def stop(self, events: int) -> None:
        for name, pid in self.pids.items():
            before, after = self._started.get(name), _read(pid)
            if before is None or after is None or events <= 0:
                self.per_event_us[name] = None
            else:
                self.per_event_us[name] = (after - before) / events * 1e6


def _read(pid: int | None) -> float | None:
    return None if pid is None else cpu_seconds(pid)
