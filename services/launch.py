"""Starting a service as a child process, the way docker-compose runs it: `headwater run …`
(and `headwater api`)."""

from __future__ import annotations

import sys
from pathlib import Path

from shared.stack.processes import ManagedProcess


def start_service(service: str, spec: Path, env: dict[str, str]) -> ManagedProcess:
    """`headwater run SERVICE --spec SPEC` with HEADWATER_* settings from `env`."""
    return ManagedProcess(
        service,
        [sys.executable, "-m", "services.cli.main", "run", service, "--spec", str(spec)],
        env=env,
    )


def start_api(port: int, env: dict[str, str]) -> ManagedProcess:
    """`headwater api --port PORT` on loopback with HEADWATER_* settings from `env`."""
    return ManagedProcess(
        "api", [sys.executable, "-m", "services.cli.main", "api", "--port", str(port)], env=env
    )
