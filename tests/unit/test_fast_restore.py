"""Pickling for fast restores: the same state back, shared and cyclic references kept,
classes with their own pickling left to it."""

import pickle
from collections import OrderedDict

import pytest
from river import linear_model, preprocessing

from services.replay.datasets import dataset_events
from shared.checkpoint.fast_restore import dumps, set_attributes, state_setter
from shared.models.fingerprint import fingerprint


class Node:
    def __init__(self, value, peer=None):
        self.value = value
        self.peer = peer
        self.children = []


class OwnSetstate:
    def __init__(self):
        self.a = 1

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.set_on = id(self)  # on this very object, not on a stand-in


class DropsCache:
    def __init__(self):
        self.kept = 2
        self.cache = {"big": 1}

    def __getstate__(self):
        return {"kept": self.kept, "cache": None}


class Slotted:
    __slots__ = ("__dict__", "a")

    def __init__(self):
        self.a = 1
        self.b = 2


class Table(dict):
    def __init__(self):
        super().__init__(x=1)
        self.note = "n"


def test_plain_objects_come_back_equal_with_shared_and_cyclic_references():
    shared = Node("shared")
    a, b = Node("a", shared), Node("b", shared)
    a.children.append(a)  # a cycle through a list
    shared.peer = shared  # a cycle through an attribute
    root = OrderedDict(a=a, b=b)
    blob = dumps(root)
    assert b"set_attributes" in blob  # the fast state setter is what restores them
    back = pickle.loads(blob)
    assert back["a"].peer is back["b"].peer
    assert back["a"].children[0] is back["a"]
    assert back["a"].peer.peer is back["a"].peer
    assert [back["a"].value, back["b"].value, back["a"].peer.value] == ["a", "b", "shared"]


def test_classes_with_their_own_pickling_keep_it():
    own, drops, slotted, table = pickle.loads(
        dumps([OwnSetstate(), DropsCache(), Slotted(), Table()])
    )
    assert own.set_on == id(own)
    assert own.a == 1
    assert (drops.kept, drops.cache) == (2, None)
    assert (slotted.a, slotted.b) == (1, 2)
    assert dict(table) == {"x": 1}
    assert table.note == "n"
    assert state_setter(OwnSetstate) is None
    assert state_setter(Table) is None
    assert state_setter(Node) is set_attributes
    assert state_setter(DropsCache) is set_attributes


@pytest.mark.parametrize(
    "make",
    [
        linear_model.LogisticRegression,
        lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression(),
    ],
    ids=["LogisticRegression", "pipeline"],
)
def test_a_restored_river_model_is_the_same_model(make):
    events = list(dataset_events("Phishing", limit=400))
    model = make()
    for e in events[:200]:
        model.learn_one(e.data, e.label)
    blob = dumps(model)
    assert b"set_attributes" in blob
    if "StandardScaler" in str(model):  # River's own __setstate__ runs, on a stand-in
        assert b"set_attributes_via_own_setstate" in blob
    fast, plain = pickle.loads(blob), pickle.loads(pickle.dumps(model))
    assert fingerprint(fast) == fingerprint(plain) == fingerprint(model)
    for e in events[200:]:
        assert fast.predict_proba_one(e.data) == model.predict_proba_one(e.data)
        fast.learn_one(e.data, e.label)
        model.learn_one(e.data, e.label)
    assert fingerprint(fast) == fingerprint(model)


class _Tenfold:
    """A data descriptor that changes what it stores."""

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, owner=None):
        return obj.__dict__[self.name]

    def __set__(self, obj, value):
        obj.__dict__[self.name] = value * 10


class WithDescriptors:
    v = _Tenfold()

    def __init__(self):
        self.v = 1  # stored as 10
        self.__dict__["shown"] = 2

    @property
    def shown(self):  # read-only, and also a key of __dict__
        return self.__dict__["shown"]


def test_names_that_are_data_descriptors_are_restored_as_pickle_does():
    back = pickle.loads(dumps(WithDescriptors()))
    plain = pickle.loads(pickle.dumps(WithDescriptors()))
    assert (back.v, back.shown) == (plain.v, plain.shown) == (10, 2)
