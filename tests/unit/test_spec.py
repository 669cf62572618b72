from pathlib import Path

import pytest

from shared.spec import SpecError, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[2]

GOOD = """
name: demo
task: binary
models:
  - name: lr
    river:
      pipeline:
        - river.preprocessing.StandardScaler
        - class: river.linear_model.LogisticRegression
          params: {l2: 0.01, optimizer: {class: river.optim.SGD, params: {lr: 0.1}}}
"""


@pytest.mark.parametrize(
    "path", sorted((ROOT / "ops" / "pipelines").glob("*.yaml")), ids=lambda p: p.name
)
def test_example_specs_load(path):
    spec = load_spec(path)
    assert spec.models
    assert spec.champion in {m.name for m in spec.models}


def test_defaults():
    spec = parse_spec(GOOD)
    assert spec.champion == "lr"
    assert spec.entity_field == "entity"
    assert spec.labels.horizon_events == 100_000
    assert spec.metrics == ()


def bad(text: str) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(text, "bad.yaml")
    return str(info.value)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("task: binary", "task: ranking"), "task: 'ranking' is not one of"),
        (("name: demo", "name: Demo Pipeline"), "name: 'Demo Pipeline' does not match"),
        (("name: lr", "name: lr\n    extra: 1"), "models[0]: Additional properties"),
        (("river.preprocessing.StandardScaler", "os.system"), "models[0].river.pipeline[0]"),
        (
            ("river.preprocessing.StandardScaler", "river.preprocessing.NoSuchScaler"),
            "does not exist",
        ),
        (
            ("river.preprocessing.StandardScaler", "river.stream.iter_csv"),
            "is not a River estimator",
        ),
        (("l2: 0.01", "l3: 0.01"), "cannot construct river.linear_model.LogisticRegression"),
        (("task: binary", "task: regression"), "needs a regressor"),
    ],
)
def test_errors_name_the_bad_field(change, expected):
    message = bad(GOOD.replace(*change))
    assert "bad.yaml" in message
    assert expected in message


def test_missing_models_and_unknown_champion_and_duplicates():
    assert "(top level): 'models' is a required property" in bad("name: x\ntask: binary\n")
    dup = GOOD + "  - name: lr\n    river: river.linear_model.LogisticRegression\nchampion: nope\n"
    message = bad(dup)
    assert "models[1].name: duplicate model name 'lr'" in message
    assert "champion: 'nope' is not one of the models" in message


def test_metric_must_be_a_metric():
    message = bad(GOOD + "metrics: [river.linear_model.LogisticRegression]\n")
    assert "metrics[0]: LogisticRegression is not a river.metrics metric" in message


def test_yaml_syntax_error_names_the_line():
    assert "line 4, column 1: not valid YAML" in bad("name: x\ntask: binary\nmodels: [\n")


def test_binary_only_model_rejected_for_multiclass():
    text = GOOD.replace("task: binary", "task: multiclass")
    assert "binary-only" in bad(text)


def test_unreadable_file(tmp_path):
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "missing.yaml")


def test_default_label_must_suit_the_task():
    text = GOOD.replace("task: binary", "task: regression").replace(
        "river.linear_model.LogisticRegression", "river.linear_model.LinearRegression"
    )
    assert "labels.default: regression needs a numeric label" in bad(
        text + "labels: {default: none}\n"
    )


def test_features_section_is_validated_with_named_errors():
    good = (
        GOOD
        + "features:\n  windows: [{kind: sliding, size: 10m}]\n"
        + "  aggregations: [{field: amount, ops: [mean, max]}]\n"
    )
    spec = parse_spec(good)
    assert spec.features is not None
    assert spec.features.names() == ["time_since_last_s", "amount_mean_10m", "amount_max_10m"]
    assert "features.windows[0].kind: 'rolling' is not one of" in bad(
        good.replace("sliding", "rolling")
    )
    assert "features.windows[0].size" in bad(good.replace("size: 10m", "size: ten"))
    assert "features.aggregations[0].ops[1]: 'median' is not one of" in bad(
        good.replace("max]", "median]")
    )
