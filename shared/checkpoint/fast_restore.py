"""Pickling whose restored objects run as fast as freshly built ones.

Plain unpickling fills each object's `__dict__` directly. On CPython 3.11 that turns the
object's attributes from inline values into a dict of their own, and every later
`self.attr` of the object takes a slower path: a River LogisticRegression restored that way
learns about 13% slower than a fresh one, and a learner restores (or receives in its model
process) every model it runs. Here plain objects are pickled with a state setter that sets
their attributes one by one on the new object instead, which keeps them inline. What is
pickled is the same state; only the way it is put back differs, so a blob loads with plain
`pickle.loads` too.

A class with a `__setstate__` of its own keeps it, except River's: those only default a
missing attribute and update `__dict__` (StandardScaler's, in River 0.26), so they run on
a scratch instance whose attributes are then set one by one on the real one.
"""

from __future__ import annotations

import copyreg
import io
import pickle
from typing import Any

_MANAGED_DICT = 1 << 4  # Py_TPFLAGS_MANAGED_DICT: instances keep attributes inline
_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class defined in Python
# Hooks with which a class chooses its own pickling; such classes keep it. (Slots need
# no check: their values come in a state that is not a dict, which is left to pickle.)
_OWN_PICKLING = ("__reduce__", "__reduce_ex__", "__getnewargs__", "__getnewargs_ex__")
_DICT_FILLING_SETSTATE = "river"  # the package whose __setstate__ methods only fill __dict__
# What object's own reduction names to make an instance: pickle writes it as NEWOBJ.
_NEWOBJ: Any = copyreg.__newobj__  # type: ignore[attr-defined]

_setters: dict[type, Any] = {}
_descriptors: dict[type, frozenset[str]] = {}
_UNKNOWN = object()


def set_attributes(obj: Any, state: dict[str, Any]) -> None:
    """The state setter: attributes set one by one stay inline, unlike `__dict__.update`.
    A name that is also a data descriptor of the class (a property, a slot) goes into
    `__dict__` as pickle puts it, not through the descriptor."""
    if not _data_descriptors(type(obj)).isdisjoint(state):
        obj.__dict__.update(state)
        return
    try:
        for name, value in state.items():
            object.__setattr__(obj, name, value)
    except TypeError:  # a name that is not a str, put in `__dict__` by hand
        obj.__dict__.update(state)


def _data_descriptors(cls: type) -> frozenset[str]:
    names = _descriptors.get(cls)
    if names is None:
        names = _descriptors[cls] = frozenset(
            name
            for c in cls.__mro__
            for name, value in vars(c).items()
            if name not in ("__dict__", "__weakref__")
            and (hasattr(type(value), "__set__") or hasattr(type(value), "__delete__"))
        )
    return names


def set_attributes_via_own_setstate(obj: Any, state: dict[str, Any]) -> None:
    cls: Any = type(obj)
    scratch = cls.__new__(cls)
    scratch.__setstate__(state)
    set_attributes(obj, vars(scratch))


def state_setter(cls: type) -> Any:
    """How instances of `cls` are to be restored here: `set_attributes`, through their own
    `__setstate__` (`set_attributes_via_own_setstate`), or None (pickle's own way)."""
    setter = _setters.get(cls, _UNKNOWN)
    if setter is _UNKNOWN:
        mro = cls.__mro__[:-1]  # without `object`
        own = next((c for c in mro if "__setstate__" in vars(c)), None)
        fast = (
            bool(cls.__flags__ & _MANAGED_DICT)
            and all(c.__flags__ & _HEAPTYPE for c in mro)  # no builtin base (dict, list...)
            and not any(name in vars(c) for c in mro for name in _OWN_PICKLING)
            and cls not in copyreg.dispatch_table
        )
        if not fast:
            setter = None
        elif own is None:
            setter = set_attributes
        elif own.__module__.split(".", 1)[0] == _DICT_FILLING_SETSTATE:
            setter = set_attributes_via_own_setstate
        else:
            setter = None
        _setters[cls] = setter
    return setter


class FastRestorePickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        cls = type(obj)
        setter = None if isinstance(obj, type) else state_setter(cls)
        if setter is None:
            return NotImplemented
        state = obj.__getstate__()  # object's, or the class's own (e.g. dropping caches)
        if state is None and setter is set_attributes:
            return _NEWOBJ, (cls,)
        if type(state) is not dict:
            return NotImplemented
        return _NEWOBJ, (cls,), state, None, None, setter


def dumps(obj: Any, protocol: int = pickle.HIGHEST_PROTOCOL) -> bytes:
    buffer = io.BytesIO()
    FastRestorePickler(buffer, protocol).dump(obj)
    return buffer.getvalue()
