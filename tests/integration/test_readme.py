"""The README's examples run against a real stack, so they cannot rot."""

import re
import subprocess
import sys

import pytest

from services.launch import start_service
from shared.kafka import ensure_topics
from shared.redis_store import RedisStore
from shared.settings import Settings, TopicNames

from .conftest import ROOT, headwater

README = (ROOT / "README.md").read_text()


def readme_client() -> str:
    match = re.search(r"<!-- readme-client -->\n```python\n(.*?)```", README, re.S)
    assert match, "the README lost its client example"
    return match.group(1)


@pytest.mark.tansu_smoke
def test_external_client_gets_a_prediction_from_a_running_learner(stack, tmp_path):
    """Default topic names, as a user of `headwater stack` has them."""
    ensure_topics(stack.bootstrap, {n: 1 for n in TopicNames().model_dump().values()})
    RedisStore(stack.redis_url).client.flushdb()
    env = stack.env()  # what `headwater stack` prints
    service_env = {**env, "HEADWATER_CONSUMER_GROUP_PREFIX": "readme"}
    ingest = start_service("ingest", ROOT / "ops/pipelines/phishing.yaml", service_env)
    learner = start_service("learner", ROOT / "ops/pipelines/phishing.yaml", service_env)
    try:
        script = tmp_path / "client.py"
        script.write_text(readme_client())
        result = subprocess.run(
            [sys.executable, str(script)],
            env={**env, "PATH": ""},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr + ingest.log_tail() + learner.log_tail()
        models = {line.split()[0] for line in result.stdout.splitlines()}
        assert models & {"logreg", "hoeffding-tree", "vw-logistic"}, result.stdout
    finally:
        assert learner.stop() == 0, learner.log_tail()
        assert ingest.stop() == 0, ingest.log_tail()


def test_readme_names_every_cli_command():
    help_text = headwater("--help").stdout
    for command in ("demo", "stack", "run", "datasets", "replay", "record", "spec", "bench"):
        assert command in help_text
        assert f"headwater {command}" in README
    for variable in re.findall(r"`(HEADWATER_[A-Z_]+)`", README):
        field = variable.removeprefix("HEADWATER_").lower()
        if not field.startswith("topics__"):
            assert field in Settings.model_fields, f"README documents unknown setting {variable}"


def test_readme_spec_examples_are_valid_specs():
    from shared.spec import IngestPolicy, parse_spec
    from shared.spec.drift import DriftSpec

    blocks = re.findall(r"```yaml\n(.*?)```", README, re.S)
    assert len(blocks) == 4, "expected the pipeline spec, features, ingest and drift examples"
    full = parse_spec(blocks[0], "README pipeline spec")
    assert [m.name for m in full.models] == ["logreg", "tree", "vw"]
    assert full.ingest.dedupe_horizon_s == 3600
    minimal = (
        "name: readme\ntask: binary\n"
        "models: [{name: m, river: river.linear_model.LogisticRegression}]\n"
    )
    with_features = parse_spec(minimal + blocks[1], "README features example")
    assert with_features.features is not None
    assert "amount_mean_10m" in with_features.features.names()
    assert "country_distinct_count_1h" in with_features.features.names()
    with_ingest = parse_spec(minimal + blocks[2], "README ingest example")
    assert with_ingest.ingest == IngestPolicy()  # the example shows the defaults
    with_drift = parse_spec(minimal + blocks[3], "README drift example")
    assert with_drift.drift == DriftSpec()  # the example shows the defaults
