"""The benchmarks' CPU meter: per-process CPU per event, None where it cannot know."""

import os
import subprocess
import sys
import time

from services.bench.cpu import CpuMeter, cpu_seconds


def burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_cpu_seconds_counts_this_process_work():
    before = cpu_seconds(os.getpid())
    burn(0.2)
    after = cpu_seconds(os.getpid())
    assert before is not None
    assert after is not None
    assert 0.15 <= after - before <= 1.0  # clock ticks of 10 ms


def test_the_meter_gives_cpu_per_event_and_none_where_unknown():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    meter = CpuMeter(lambda: {"me": os.getpid(), "gone": gone.pid, "none": None})
    meter.start()
    burn(0.2)
    meter.stop(events=1000)
    assert 150 <= meter.per_event_us["me"] <= 1000  # 0.2 s over 1,000 events: ~200 µs each
    assert meter.per_event_us["gone"] is None
    assert meter.per_event_us["none"] is None
    meter.start()
    meter.stop(events=0)
    assert meter.per_event_us["me"] is None
