"""What a model gets for an event's data: shared by the learner and every reader that
scores with a published model snapshot (shared/snapshot.py)."""

from __future__ import annotations

from collections.abc import Mapping
from sys import intern
from typing import Any

from shared.models.vw_model import features_text


def features(data: Mapping[str, Any]) -> dict[str, Any]:
    """Null means missing: River models expect an absent key, not None."""
    if type(data) is dict and None not in data.values():
        return data  # the commonest case, without a copy (events are never changed)
    return {k: v for k, v in data.items() if v is not None}


def model_input(data: Mapping[str, Any], vw_text: bool, interned: bool = True) -> Any:
    """What the models get for an event's data: the features without nulls, as VW's text
    when every model is VW (see `LearnerCore.vw_text`), else as a dict whose names are
    interned (unless not `interned`: a scorer, whose models' keys are not this process's
    interned strings, would copy every record's dict for nothing)."""
    if vw_text:
        return features_text(features(data))
    if not interned:
        return features(data)
    # Interned names are the models' own dict keys (lookups by identity, about a microsecond
    # a record), and marshal carries the interning to a model process. msgspec hands out
    # the same key objects record after record, so this interns each name in place once; a
    # name interned elsewhere before (a literal in some module) needs the dict rebuilt, and
    # the rebuild drops the nulls as it goes: `features`' search for one costs more than
    # the rebuild's test of each value (4.2% of the learner thread's instructions on
    # Phishing, whose names River's modules intern first; callgrind).
    for name in data:
        if intern(name) is not name:
            names = _NAMES
            try:
                return {names[k]: v for k, v in data.items() if v is not None}
            except KeyError:  # a name not seen yet
                return _interned_copy(data)
    return features(data)


# Each name seen in a rebuild, to its interned string: a dict lookup costs less than a call
# of intern (1.3% of the learner thread's instructions on Phishing, callgrind). Keyed by
# the decoder's own name objects, which it hands out record after record (found by
# identity). Only the learner's thread rebuilds; a lookup racing a clear just refills it.
_NAMES: dict[str, str] = {}
_NAMES_KEPT = 10_000  # past this many (a stream of ever new names), it starts again


def _interned_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    """`data` without nulls, its names interned."""
    names = _NAMES
    if len(names) > _NAMES_KEPT:
        names.clear()
    for k in data:
        names[k] = intern(k)
    return {names[k]: v for k, v in data.items() if v is not None}
