"""Every model kind a spec can declare: checkpoint -> restore -> identical predictions.

The checkpoint format is pickle (River) and VW's own serialization (inside the adapter's
pickle state); a restored model must predict and keep learning bit-identically.
"""

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.replay.datasets import dataset_events
from shared.checkpoint.codec import dumps, loads
from shared.checkpoint.keys import CheckpointKeys
from shared.models import build_model, vw_model
from shared.models.fingerprint import fingerprint
from shared.models.river_model import binary_proba, canonical_proba
from shared.models.vw_model import features_text, format_features

KEY = CheckpointKeys(b"test-key")


def round_trip(model):
    blob = dumps(model)
    return loads(blob, KEY.sign(blob), KEY)


IMAGE_CLASSES = ["brickface", "cement", "foliage", "grass", "path", "sky", "window"]

CASES = [
    (
        "binary",
        "Phishing",
        "river",
        {
            "pipeline": [
                "river.preprocessing.StandardScaler",
                "river.linear_model.LogisticRegression",
            ]
        },
    ),
    (
        "binary",
        "Phishing",
        "river",
        {"class": "river.tree.HoeffdingTreeClassifier", "params": {"grace_period": 50}},
    ),
    ("binary", "Phishing", "river", "river.naive_bayes.GaussianNB"),
    ("binary", "Phishing", "vw", {"args": "-l 0.5"}),
    (
        "multiclass",
        "ImageSegments",
        "river",
        {"pipeline": ["river.preprocessing.StandardScaler", "river.neighbors.KNNClassifier"]},
    ),
    (
        "multiclass",
        "ImageSegments",
        "river",
        {
            "pipeline": [
                "river.preprocessing.StandardScaler",
                {
                    "class": "river.multiclass.OneVsRestClassifier",
                    "params": {"classifier": {"class": "river.linear_model.LogisticRegression"}},
                },
            ]
        },
    ),
    ("multiclass", "ImageSegments", "vw", {"args": ["-b", "18"], "classes": IMAGE_CLASSES}),
    (
        "regression",
        "TrumpApproval",
        "river",
        {"pipeline": ["river.preprocessing.StandardScaler", "river.linear_model.LinearRegression"]},
    ),
    ("regression", "TrumpApproval", "river", "river.tree.HoeffdingTreeRegressor"),
    ("regression", "TrumpApproval", "vw", {"args": "--l2 1e-6"}),
]


@pytest.mark.parametrize(("task", "dataset", "kind", "config"), CASES, ids=lambda v: str(v)[:40])
def test_checkpoint_restore_predicts_and_learns_identically(task, dataset, kind, config):
    events = list(itertools.islice(dataset_events(dataset), 500))
    original = build_model("m", kind, config, task, "models[0]")
    for e in events[:300]:
        original.predict(e.data)
        original.learn(e.data, e.label)
    restored = round_trip(original)
    knn = "KNN" in str(config)
    for e in events[300:]:
        if knn:
            # River's KNN sums votes over a set whose order changes with unpickling: the
            # state is identical, the probabilities may differ in the last bit.
            (pred_r, proba_r), (pred_o, proba_o) = (
                restored.predict(e.data),
                original.predict(e.data),
            )
            assert pred_r == pred_o
            assert [c for c, _ in proba_r] == [c for c, _ in proba_o]
            assert [p for _, p in proba_r] == pytest.approx([p for _, p in proba_o], rel=1e-12)
        else:
            assert restored.predict(e.data) == original.predict(e.data)
        original.learn(e.data, e.label)
        restored.learn(e.data, e.label)
    assert fingerprint(restored) == fingerprint(original)


def test_vw_refuses_file_and_task_options():
    from shared.models.river_factory import FactoryError

    for args in ("-d /etc/passwd", "--loss_function=hinge", "-f model.bin", "--oaa 3"):
        with pytest.raises(FactoryError, match="not allowed"):
            build_model("m", "vw", {"args": args}, "binary", "models[0].vw")
    with pytest.raises(FactoryError, match="need `classes`"):
        build_model("m", "vw", {}, "multiclass", "models[0].vw")
    with pytest.raises(FactoryError, match="VW rejected"):
        build_model("m", "vw", {"args": "--no_such_option"}, "binary", "models[0].vw")


def test_fingerprint_sees_a_single_bit():
    model = build_model("m", "river", "river.linear_model.LogisticRegression", "binary", "m")
    model.learn({"x": 1.0}, True)
    before = fingerprint(model)
    assert fingerprint(round_trip(model)) == before
    weights = model.estimator._weights
    weights["x"] = float.fromhex(
        weights["x"].hex()[:-1] + ("0" if weights["x"].hex()[-1] != "0" else "1")
    )
    assert fingerprint(model) != before


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_vw_learns_the_same_from_a_reused_or_a_fresh_example(task):
    """learn() reuses the example predict() parsed when given the same features."""
    dataset = {"binary": "Phishing", "multiclass": "ImageSegments", "regression": "TrumpApproval"}[
        task
    ]
    config = {"classes": IMAGE_CLASSES} if task == "multiclass" else {}
    reused = build_model("m", "vw", config, task, "m")
    fresh = build_model("m", "vw", config, task, "m")
    for e in itertools.islice(dataset_events(dataset), 300):
        assert reused.predict(e.data) == fresh.predict(dict(e.data))
        reused.learn(e.data, e.label)  # same dict as predicted: cached example
        fresh.learn(dict(e.data), e.label)  # a copy: parsed again
    assert fingerprint(reused) == fingerprint(fresh)


@pytest.mark.parametrize(
    "proba",
    [
        {False: 0.2, True: 0.8},
        {True: 0.8, False: 0.2},
        {False: 0.5, True: 0.5},  # a tie goes to False, as River's argmax does
        {True: 0.5, False: 0.5},
        {False: float("nan"), True: 0.7},
        {True: np.float64(0.6), False: np.float64(0.4)},
    ],
)
def test_the_binary_shortcut_gives_the_canonical_answer(proba):
    got = binary_proba(proba)
    assert got is not None
    want = canonical_proba(proba)
    assert repr(got) == repr(want)  # same values, same types, NaN included
    assert [type(p) for _, p in got[1]] == [float, float]


@pytest.mark.parametrize(
    "proba", [{0: 0.3, 1: 0.7}, {"a": 0.5, "b": 0.5}, {True: 1.0}, {False: 0.1, 1: 0.9}, {}]
)
def test_the_binary_shortcut_leaves_other_maps_to_the_canonical_route(proba):
    assert binary_proba(proba) is None


@pytest.mark.parametrize(("task", "dataset", "kind", "config"), CASES, ids=lambda v: str(v)[:40])
def test_predict_learn_is_predict_then_learn(task, dataset, kind, config):
    """The one call (VW's predict_then_learn_one) gives the prediction made before learning
    and learns the same weights as the two calls."""
    events = list(itertools.islice(dataset_events(dataset), 400))
    one = build_model("m", kind, config, task, "models[0]")
    two = build_model("m", kind, config, task, "models[0]")
    for e in events[:300]:
        assert one.predict_learn(e.data, e.label) == two.predict(e.data)
        two.learn(e.data, e.label)
    for e in events[300:]:  # the same weights: the same predictions from here on
        assert one.predict(e.data) == two.predict(e.data)
    if kind == "river":
        assert fingerprint(one) == fingerprint(two)
    elif task != "multiclass":  # weights() crashes on --oaa models (vowpal-wabbit-next 0.7)
        assert np.array_equal(one.workspace.weights(), two.workspace.weights())


_feature_values = st.one_of(
    st.floats(),
    st.integers(-(10**20), 10**20),
    st.booleans(),
    st.text(max_size=5),
    st.builds(np.float32, st.floats(-1e6, 1e6, width=32)),
    st.builds(np.int64, st.integers(-(2**40), 2**40)),
)


@given(st.dictionaries(st.text(max_size=6), _feature_values, max_size=8))
def test_vw_text_is_the_same_by_its_format_string_as_feature_by_feature(x):
    """Names with %, :, | or spaces, booleans, strings and NumPy scalars included."""
    first = features_text(x)
    assert first == format_features(x)
    assert features_text(dict(x)) == first  # again, from the cached format string


def test_vw_text_of_plain_numbers_uses_a_format_string():
    x = {"a%d": 1.5, "b c": 2, "d|e:f": -0.0}
    assert features_text(x) == format_features(x) == "|f a%d:1.5 b_c:2 d_e_f:-0.0"
    assert vw_model._FORMATS[("a%d", "b c", "d|e:f")] == "|f a%%d:%r b_c:%r d_e_f:%r"


@pytest.mark.parametrize(
    ("args", "one_pass"),
    [
        ("-l 0.5 --l2 1e-6 -b 18", True),
        ("--nn 3 --dropout", False),
        ("--bootstrap 3", False),
        ("--lrq ff2 --lrqdropout", False),
    ],
)
def test_vw_predict_learn_is_exact_whatever_the_options(args, one_pass):
    """With options whose learning pass predicts otherwise, predict_learn makes two calls."""
    one = build_model("m", "vw", {"args": args}, "binary", "models[0].vw")
    two = build_model("m", "vw", {"args": args}, "binary", "models[0].vw")
    assert one._one_pass is one_pass
    for e in itertools.islice(dataset_events("Phishing"), 200):
        assert one.predict_learn(e.data, e.label) == two.predict(e.data)
        two.learn(e.data, e.label)


def test_model_input_interns_names_and_drops_nulls_in_the_data_order():
    """A name interned first elsewhere ("https": a literal here) makes `model_input`
    rebuild the dict: every name then the interned string, nulls gone, order kept, on the
    first record and on the next (its names from the cache), for names never seen too."""
    from sys import intern

    from shared.models.inputs import model_input

    def fresh(name: str) -> str:
        return "".join(list(name))  # an equal string, not the interned one

    for extra in ("zz_first_time_name", "zz_another_name"):
        data = {fresh("https"): 1.0, fresh(extra): None, fresh("age"): 2, fresh("xs"): "a"}
        for _ in range(2):
            x = model_input(data, False)
            assert x == {"https": 1.0, "age": 2, "xs": "a"}
            assert list(x) == ["https", "age", "xs"]
            assert all(intern(k) is k for k in x)
    assert model_input(data, False, interned=False) == {"https": 1.0, "age": 2, "xs": "a"}
