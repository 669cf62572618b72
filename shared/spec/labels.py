"""Which labels a task can learn from — checked for records and for the spec's default."""

from __future__ import annotations

from typing import Any

from shared.messages.errors import MessageError

# Bound once: `int | float` in the call builds a union object every time, and the learner
# checks every inline label (with the publisher's own check: 2.7% of its thread's
# instructions, callgrind).
_NUMBER = (int, float)
_CLASS = (bool, int, str)


def check_label(label: Any, task: str) -> None:
    """A label the task cannot learn from is a bad record (reason `bad_label`), not a crash."""
    if task == "regression" and (isinstance(label, bool) or not isinstance(label, _NUMBER)):
        raise MessageError("bad_label", f"regression needs a numeric label, got {label!r}")
    if task == "binary" and not isinstance(label, _CLASS):
        raise MessageError("bad_label", f"binary classification label {label!r} is not a class")
    if task == "multiclass" and isinstance(label, float):
        raise MessageError("bad_label", f"multiclass label {label!r} is a float, not a class")
