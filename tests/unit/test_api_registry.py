"""The pipeline registry's pure parts: which names it lists, and what a scan of a Redis
written before it registers."""

from services.api.registry import pipelines_in, valid_names


def test_the_registry_lists_valid_pipeline_names_sorted_once():
    members = [b"phishing", "churn", b"churn", b"NOT A NAME", b"", b"-starts-badly", b"a" * 64]
    assert valid_names(members) == ["churn", "phishing"]


def test_a_scan_of_old_marks_finds_each_pipeline_once():
    keys = [
        b"headwater:phishing:learner:status",
        b"headwater:phishing:learner:ckpt:latest",
        b"headwater:churn:monitor:alerts",
        b"headwater:only-features:features-status:host-1",
        b"headwater:Bad Name:learner:spec",
    ]
    assert pipelines_in(keys) == ["churn", "only-features", "phishing"]
    assert pipelines_in([]) == []
