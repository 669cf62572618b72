import gzip
import json

import pytest

from services.replay.datasets import DatasetError, dataset_events, list_datasets
from services.replay.recorded import RecordedStreamError, read_events, scan, write_events
from shared.messages import Event


def sample(n=3):
    return [Event(f"e{i}", "u", float(i), {"x": i * 0.1, "s": "a"}, i % 2 == 0) for i in range(n)]


@pytest.mark.parametrize("name", ["s.jsonl", "s.jsonl.gz"])
def test_round_trip(tmp_path, name):
    path = tmp_path / name
    assert write_events(path, sample()) == 3
    assert list(read_events(path)) == sample()
    assert scan(path) == 3
    if name.endswith(".gz"):
        with gzip.open(path) as fh:
            assert fh.read(1) == b"{"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"event_id": "e9", "entity": "u", "ts": NaN, "data": {}}', "NaN is not allowed"),
        ('{"event_id": "e9", "entity": "u", "ts": 1, "data": {}, "extra": 1}', "unknown_field"),
        ('{"event_id": "e0", "entity": "u", "ts": 1, "data": {}}', "duplicate event_id 'e0'"),
        ("[1, 2]", "not_an_object"),
        (
            '{"event_id": "e9", "entity": "\\ud800", "ts": 1, "data": {}}',
            "unpaired UTF-16 surrogate",
        ),
    ],
)
def test_bad_line_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    good = [json.dumps(e.to_wire()) for e in sample()]
    path.write_text("\n".join([good[0], "", good[1], line, good[2]]) + "\n")
    with pytest.raises(RecordedStreamError) as info:
        scan(path)
    assert str(info.value).startswith(f"{path}:4: ")
    assert message in str(info.value)


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(RecordedStreamError, match="holds no events"):
        scan(empty)
    with pytest.raises(RecordedStreamError, match="cannot read"):
        scan(tmp_path / "missing.jsonl")


def test_failed_write_leaves_no_partial_file(tmp_path):
    path = tmp_path / "out.jsonl"

    def broken():
        yield sample()[0]
        raise RuntimeError("source failed")

    with pytest.raises(RuntimeError):
        write_events(path, broken())
    assert list(tmp_path.iterdir()) == []


def test_dataset_export_is_deterministic():
    first = list(dataset_events("phishing"))
    assert first == list(dataset_events("Phishing"))
    assert len(first) == 1250
    assert first[0].event_id == "phishing-00000000"
    assert first[1].ts - first[0].ts == 1.0


def test_synthetic_stream_with_params_limit_and_default_seed():
    a = list(dataset_events("SEA", limit=50, params={"variant": 1}))
    assert a == list(dataset_events("SEA", limit=50, params={"variant": 1}))
    assert a != list(dataset_events("SEA", limit=50, params={"variant": 1, "seed": 7}))
    assert len(a) == 50
    assert len(list(dataset_events("Agrawal"))) == 10_000


def test_entities_spread():
    events = list(dataset_events("Phishing", limit=4, entities=2))
    assert [e.entity for e in events] == ["phishing-e0", "phishing-e1"] * 2


def test_dataset_errors():
    with pytest.raises(DatasetError, match="unknown dataset 'Nope'"):
        list(dataset_events("Nope"))
    with pytest.raises(DatasetError, match="must be downloaded"):
        list(dataset_events("CreditCard"))
    with pytest.raises(DatasetError, match="takes no parameters"):
        list(dataset_events("Phishing", params={"x": 1}))
    with pytest.raises(DatasetError, match="cannot create SEA"):
        list(dataset_events("SEA", params={"colour": "red"}))
    assert {"Phishing", "SEA"} <= {d.name for d in list_datasets()}
