"""The Redis key layout is a contract with existing deployments: a renamed key would hide
every checkpoint written before. These are the keys Headwater has always used."""

from shared.keys import PIPELINES, PipelineKeys, pipeline_of, pipeline_patterns


def test_the_key_layout_is_unchanged():
    keys = PipelineKeys("phishing")
    assert keys.checkpoint("learner") == "headwater:phishing:learner:ckpt"
    assert keys.checkpoint("features-p3") == "headwater:phishing:features-p3:ckpt"
    assert keys.learner_status == "headwater:phishing:learner:status"
    assert keys.learner_spec == "headwater:phishing:learner:spec"
    assert keys.learner_lease == "headwater:phishing:learner:lease"
    assert keys.learner_paused == "headwater:phishing:learner:paused"
    assert keys.learner_snapshot == "headwater:phishing:learner:snapshot"  # since issue 23
    assert keys.instance_status("ingest", "h-1") == "headwater:phishing:ingest-status:h-1"
    assert keys.entity_features == "headwater:phishing:features:"
    assert keys.monitor_alerts == "headwater:phishing:monitor:alerts"
    assert PIPELINES == "headwater:pipelines"  # the registry, since issue 24


def test_pipelines_are_found_by_their_marks():
    assert pipeline_patterns() == [
        "headwater:*:learner:status",
        "headwater:*:learner:ckpt:latest",
        "headwater:*:monitor:alerts",
        "headwater:*:learner:spec",
        "headwater:*:features-status:*",
    ]
    assert pipeline_of("headwater:phishing-windows:learner:status") == "phishing-windows"


def test_the_architecture_doc_names_every_key():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs/ARCHITECTURE.md").read_text()
    keys = PipelineKeys("p")
    properties = [n for n, v in vars(PipelineKeys).items() if isinstance(v, property)]
    named = [getattr(keys, n) for n in properties if n != "base"]
    named += [keys.instance_status(s, "<instance>") for s in ("ingest", "features")]
    named += [keys.checkpoint("<owner>"), PIPELINES]
    for key in named:
        suffix = key.removeprefix("headwater:p:")
        assert f"`{suffix}" in doc, f"{suffix} is not in docs/ARCHITECTURE.md"
