"""A model's learned state as a digest: equal digests mean bit-identical parameters.

Pickle bytes are no such measure (memoised shared strings differ after a round trip), so
the state is walked: floats by their exact bits, containers in order, objects by their
attributes, VW models by VW's own serialization.
"""

from __future__ import annotations

import hashlib
import sys
import types
from collections.abc import Callable
from typing import Any


def fingerprint(model: Any) -> str:
    digest = hashlib.sha256()
    previous = sys.getrecursionlimit()
    sys.setrecursionlimit(max(previous, 20_000))
    try:
        _walk(model, digest.update, set())
    finally:
        sys.setrecursionlimit(previous)
    return digest.hexdigest()


def _walk(obj: Any, out: Callable[[bytes], None], path: set[int]) -> None:
    if obj is None or isinstance(obj, bool | int | str):
        out(f"{type(obj).__name__}:{obj!r};".encode())
    elif isinstance(obj, float):
        out(f"f:{obj.hex()};".encode())
    elif isinstance(obj, bytes | bytearray):
        out(b"b:" + bytes(obj) + b";")
    elif isinstance(obj, type | types.FunctionType | types.BuiltinFunctionType):
        out(f"t:{getattr(obj, '__module__', '')}.{obj.__qualname__};".encode())
    elif id(obj) in path:
        out(b"cycle;")
    else:
        path.add(id(obj))
        try:
            _walk_container(obj, out, path)
        finally:
            path.discard(id(obj))


def _walk_container(obj: Any, out: Callable[[bytes], None], path: set[int]) -> None:
    serialize = getattr(obj, "serialize", None)
    if callable(serialize) and type(obj).__name__ == "VWModel":
        out(b"vw:" + serialize() + b";")
    elif isinstance(obj, dict):
        out(b"{")
        for key, value in obj.items():
            _walk(key, out, path)
            _walk(value, out, path)
        out(b"}")
    elif isinstance(obj, list | tuple):
        out(b"[")
        for item in obj:
            _walk(item, out, path)
        out(b"]")
    elif callable(getattr(obj, "items", None)) and not hasattr(obj, "__dict__"):
        out(b"{")  # mapping types implemented natively (River's VectorDict)
        for key, value in obj.items():
            _walk(key, out, path)
            _walk(value, out, path)
        out(b"}")
    elif isinstance(obj, set | frozenset):
        out(b"s:" + ",".join(sorted(repr(i) for i in obj)).encode() + b";")
    elif hasattr(obj, "tobytes"):  # NumPy arrays and scalars
        out(b"np:" + str(getattr(obj, "dtype", "")).encode() + obj.tobytes() + b";")
    else:
        out(f"o:{type(obj).__module__}.{type(obj).__qualname__}(".encode())
        state = getattr(obj, "__dict__", None)
        if state is not None:
            _walk(state, out, path)
        for slot in getattr(type(obj), "__slots__", ()):
            _walk(getattr(obj, slot, None), out, path)
        if state is None and not getattr(type(obj), "__slots__", ()):
            # deque, native types: what pickle would keep of them
            _walk(obj.__reduce_ex__(5)[1:], out, path)
        out(b")")
