"""ops/ and docker-compose.yaml against the tools that read them, and against the metric
contract the services export. No broker: promtool checks the Prometheus config, the alert
rules and their unit tests; docker-compose checks the compose file. Without those tools
(Debian packages `prometheus` and `docker-compose`) only the tests that need them skip.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.replay.recorded import read_events, scan
from shared.settings import TopicNames
from shared.spec.loader import load_spec
from shared.stack.kafka_broker import kafka_version

from .conftest import ROOT

pytestmark = pytest.mark.integration

PROMETHEUS = ROOT / "ops/prometheus"
CONFIG = PROMETHEUS / "prometheus.yml"
RULES = PROMETHEUS / "rules/headwater.yml"
RULE_TESTS = PROMETHEUS / "tests/headwater_test.yml"
GRAFANA = ROOT / "ops/grafana"
DASHBOARD = GRAFANA / "dashboards/headwater.json"
COMPOSE = ROOT / "docker-compose.yaml"
DOCKERFILE = ROOT / "ops/Dockerfile"
STREAM = ROOT / "ops/streams/phishing.jsonl.gz"

# Each service's HEADWATER_METRICS_PORT in compose, and its Prometheus job.
METRICS_PORTS = {"ingest": 9101, "features": 9102, "learner": 9103, "monitor": 9104, "api": 9105}
SCORER_PORT = 9106  # scorers scale by replicas: found by name (DNS), each its own target
JOBS = {f"headwater-{service}" for service in METRICS_PORTS} | {"prometheus", "headwater-scorer"}
PIPELINE_SERVICES = ("ingest", "features", "learner", "monitor")

# The metric names the services export (name -> type), as `headwater_<service>_<name>`.
CONTRACT: dict[str, str] = {
    **{
        f"headwater_{s}_{name}": kind
        for s in PIPELINE_SERVICES
        for name, kind in {
            "records_total": "counter",
            "records_out_total": "counter",
            "dead_letters_total": "counter",
            "batch_processing_seconds": "histogram",
            "consumer_lag": "gauge",
            "checkpoint_seconds": "histogram",
            "checkpoint_bytes": "gauge",
            "checkpoint_age_seconds": "gauge",
        }.items()
    },
    "headwater_learner_event_to_prediction_seconds": "histogram",
    "headwater_learner_label_lag_events": "histogram",
    "headwater_learner_pending_labels": "gauge",
    "headwater_learner_model_metric": "gauge",
    "headwater_learner_predictions_total": "counter",
    "headwater_learner_labels_learned_total": "counter",
    "headwater_learner_rollout_challenger_share": "gauge",
    "headwater_learner_rollout_agreement": "gauge",
    "headwater_learner_rollout_decisions_total": "counter",
    "headwater_scorer_records_total": "counter",
    "headwater_scorer_predictions_total": "counter",
    "headwater_scorer_batch_processing_seconds": "histogram",
    "headwater_scorer_consumer_lag": "gauge",
    "headwater_scorer_served_version": "gauge",
    "headwater_scorer_snapshot_age_seconds": "gauge",
    "headwater_monitor_drift_alerts_total": "counter",
    "headwater_api_requests_total": "counter",
    "headwater_api_request_seconds": "histogram",
}
# Series a query may name: the contract's, a histogram's parts, and Prometheus's own `up`.
SERIES = {
    name + suffix
    for name, kind in CONTRACT.items()
    for suffix in (("_bucket", "_sum", "_count") if kind == "histogram" else ("",))
} | {"up"}


def tool(*names: str, package: str) -> list[str]:
    """The command line of the first tool on PATH, or skip the test with how to get it."""
    for name in names:
        if path := shutil.which(name):
            return [path]
    pytest.skip(f"{names[0]} not installed: apt-get install {package}")


def promtool() -> list[str]:
    return tool("promtool", package="prometheus")


def docker_compose() -> list[str]:
    cmd = tool("docker-compose", "docker", package="docker-compose")
    if Path(cmd[0]).name == "docker":
        probe = subprocess.run([*cmd, "compose", "version"], capture_output=True, check=False)
        if probe.returncode != 0:
            pytest.skip("docker-compose not installed: apt-get install docker-compose")
        cmd.append("compose")
    return cmd


# The secrets compose takes from the shell (it refuses to start without them).
COMPOSE_SECRETS = {
    "HEADWATER_CHECKPOINT_KEY": "ck-0f3e9a",
    "REDIS_PASSWORD": "rp-77b1c2",
    "GRAFANA_ADMIN_PASSWORD": "gp-5d20aa",
}


def run(
    cmd: list[str], *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in COMPOSE_SECRETS}
    return subprocess.run(
        [*cmd, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**base, **(COMPOSE_SECRETS if env is None else env)},
    )


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def named_series(expr: str) -> set[str]:
    """Metric names an expression selects: bare names and `__name__=~"regex"` matchers
    (resolved against SERIES); raises on a regex that selects none of them."""
    names: set[str] = set()
    for regex in re.findall(r'__name__=~"([^"]+)"', expr):
        matched = {s for s in SERIES if re.fullmatch(regex, s)}
        assert matched, f"{regex!r} in {expr!r} selects no metric of the contract"
        names |= matched
    # Drop matchers, strings, ranges and label lists; what is left and not called is a name.
    bare = re.sub(r'\{[^}]*\}|"[^"]*"|\[[^\]]*\]', " ", expr)
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    operators = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
    for token in re.findall(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", bare):
        if token.lower() not in operators:
            names.add(token)
    return names


def dashboard_panels() -> list[dict[str, Any]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    nested = [p for row in panels for p in row.get("panels", [])]
    return [p for p in panels + nested if p["type"] != "row"]


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard_panels() for t in p["targets"]]


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in load_yaml(RULES)["groups"] for r in g["rules"] if "alert" in r]


def grouping_labels(expr: str) -> set[str]:
    return {
        label.strip() for group in re.findall(r"by \(([^)]*)\)", expr) for label in group.split(",")
    }


# --- Prometheus -------------------------------------------------------------------------


def test_promtool_checks_the_config_and_its_rule_files():
    result = run(promtool(), "check", "config", str(CONFIG.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr
    # rule_files resolve relative to the config's folder, as in the container's mount.
    assert "rules/headwater.yml" in result.stdout, result.stdout


def test_promtool_checks_the_alert_rules():
    rule_files = sorted(str(p.relative_to(ROOT)) for p in (PROMETHEUS / "rules").glob("*.yml"))
    result = run(promtool(), "check", "rules", *rule_files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_runs_the_alert_unit_tests():
    result = run(promtool(), "test", "rules", str(RULE_TESTS.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_prometheus_scrapes_exactly_the_contract_ports():
    config = load_yaml(CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == JOBS
    for service, port in METRICS_PORTS.items():
        (targets,) = jobs[f"headwater-{service}"]["static_configs"]
        assert targets["targets"] == [f"{service}:{port}"]
        assert targets["labels"] == {"service": service}
    assert jobs["prometheus"]["static_configs"] == [{"targets": ["localhost:9090"]}]
    scorer = jobs["headwater-scorer"]
    assert scorer["dns_sd_configs"] == [{"names": ["scorer"], "type": "A", "port": SCORER_PORT}]
    assert scorer["relabel_configs"] == [{"target_label": "service", "replacement": "scorer"}]
    assert config["rule_files"] == ["rules/*.yml"]
    assert sorted((CONFIG.parent).glob(config["rule_files"][0])) == [RULES]


def test_alert_rules_cover_the_contract_and_are_complete():
    rules = {r["alert"]: r for r in alert_rules()}
    wanted = {
        "HeadwaterConsumerLagGrowing": "consumer_lag",
        "HeadwaterCheckpointStale": "checkpoint_age_seconds",
        "HeadwaterDeadLetterRate": "dead_letters_total",
        "HeadwaterDriftDetected": "drift_alerts_total",
    }
    for alert, metric in wanted.items():
        assert alert in rules, f"no {alert} rule"
        assert metric in rules[alert]["expr"]
    for name, rule in rules.items():
        assert rule.get("for"), f"{name} has no for:"
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert {"summary", "description"} <= set(rule["annotations"]), name
        expr = rule["expr"]
        assert named_series(expr) <= SERIES, f"{name} names metrics outside the contract"
        # An alert says which service: up carries job and service; aggregations keep them.
        if "by (" in expr:
            assert {"job", "service"} <= grouping_labels(expr), name


def test_every_alert_has_a_firing_and_a_quiet_unit_test():
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in load_yaml(RULE_TESTS)["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = {r["alert"] for r in alert_rules()}
    assert alerts <= fires, f"never seen firing: {sorted(alerts - fires)}"
    assert alerts <= quiet, f"never seen quiet: {sorted(alerts - quiet)}"


# --- Grafana ----------------------------------------------------------------------------


def test_dashboard_queries_name_contract_metrics_on_the_provisioned_datasource():
    datasource = load_yaml(GRAFANA / "provisioning/datasources/prometheus.yml")["datasources"]
    (prom,) = datasource
    assert prom["type"] == "prometheus"
    assert prom["url"] == "http://prometheus:9090"
    panels = dashboard_panels()
    assert len({p["id"] for p in panels}) == len(panels), "panel ids repeat"
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": prom["uid"]}, panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            names = named_series(target["expr"])
            assert names, f"{panel['title']!r}: {target['expr']!r} names no metric"
            assert names <= SERIES, f"{panel['title']!r}: {sorted(names - SERIES)} unknown"
    shown = {
        re.sub(r"_(bucket|sum|count)$", "", s) for e in dashboard_exprs() for s in named_series(e)
    }
    contract_kinds = {re.sub(r"^headwater_[a-z]+_", "", name) for name in CONTRACT}
    shown_kinds = {re.sub(r"^headwater_[a-z]+_", "", name) for name in shown}
    assert contract_kinds <= shown_kinds, f"no panel for {sorted(contract_kinds - shown_kinds)}"


def test_promtool_parses_every_dashboard_query(tmp_path):
    exprs = [e.replace("$__rate_interval", "1m") for e in dashboard_exprs()]
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query{i}", "expr": e} for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    result = run(promtool(), "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisioning_points_at_the_mounted_dashboards():
    (provider,) = load_yaml(GRAFANA / "provisioning/dashboards/headwater.yml")["providers"]
    assert provider["type"] == "file"
    grafana = load_yaml(COMPOSE)["services"]["grafana"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in grafana["volumes"])
    assert mounts["./ops/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./ops/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


# --- docker-compose ---------------------------------------------------------------------


def test_docker_compose_config_is_valid():
    result = run(docker_compose(), "-f", str(COMPOSE.relative_to(ROOT)), "config", "-q")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("missing", sorted(COMPOSE_SECRETS))
def test_compose_refuses_to_run_without_each_secret(missing):
    env = {k: v for k, v in COMPOSE_SECRETS.items() if k != missing}
    result = run(docker_compose(), "-f", str(COMPOSE.relative_to(ROOT)), "config", "-q", env=env)
    assert result.returncode != 0
    assert missing in result.stderr


def test_compose_takes_its_secrets_from_the_environment_only():
    text = COMPOSE.read_text()
    assert "headwater-dev-key" not in text
    result = run(docker_compose(), "-f", str(COMPOSE.relative_to(ROOT)), "config")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    env = services["learner"]["environment"]
    assert env["HEADWATER_CHECKPOINT_KEY"] == COMPOSE_SECRETS["HEADWATER_CHECKPOINT_KEY"]
    assert env["HEADWATER_REDIS_URL"] == "redis://:rp-77b1c2@redis:6379/0"
    assert "rp-77b1c2" in services["redis"]["command"]
    grafana = services["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == "gp-5d20aa"


def test_compose_runs_the_kafka_version_the_local_stack_runs():
    """One pin (.env's KAFKA_VERSION) for compose's image and `headwater stack --broker kafka`;
    docker-compose substitutes it (the config below is what compose would run)."""
    version = kafka_version()
    assert re.fullmatch(r"4\.\d+\.\d+", version), version
    for name in ("kafka", "kafka-init"):
        assert load_yaml(COMPOSE)["services"][name]["image"].startswith(
            "apache/kafka:${KAFKA_VERSION"
        )
    result = run(docker_compose(), "-f", str(COMPOSE.relative_to(ROOT)), "config")
    assert result.returncode == 0, result.stdout + result.stderr
    images = {s.get("image") for s in yaml.safe_load(result.stdout)["services"].values()}
    assert f"apache/kafka:{version}" in images


def test_compose_services_match_the_metrics_contract_and_the_repository():
    services = load_yaml(COMPOSE)["services"]

    def in_repo(image_path: str) -> Path:  # the image holds ops/ under /app/ops
        assert image_path.startswith("/app/ops/"), image_path
        return ROOT / "ops" / image_path.removeprefix("/app/ops/")

    for service, port in METRICS_PORTS.items():
        spec = services[service]
        assert spec["build"] == {"context": ".", "dockerfile": "ops/Dockerfile"}
        env = spec["environment"]
        assert env["HEADWATER_METRICS_PORT"] == port
        assert env["HEADWATER_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert env["HEADWATER_REDIS_URL"].endswith("@redis:6379/0")
        assert spec["depends_on"] == {
            "kafka": {"condition": "service_healthy"},
            "kafka-init": {"condition": "service_completed_successfully"},
            "redis": {"condition": "service_healthy"},
        }
    for service in PIPELINE_SERVICES:
        command = services[service]["command"]
        assert command[:2] == ["run", service]
        assert load_spec(in_repo(command[3])).features is not None, (
            "the features service needs features:"
        )
    assert services["api"]["command"] == ["api", "--host", "0.0.0.0", "--port", "8000"]
    assert services["api"]["ports"] == ["8000:8000"]

    replay = services["replay"]
    assert replay["profiles"] == ["replay"]
    assert replay["command"][0] == "replay"
    assert in_repo(replay["command"][1]) == STREAM

    init = services["kafka-init"]
    assert init["environment"]["TOPICS"].split() == list(TopicNames().model_dump().values())
    assert "--if-not-exists" in init["command"][0]
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert services["redis"]["command"][:3] == ["redis-server", "--appendonly", "yes"]
    assert services["prometheus"]["ports"] == ["9090:9090"]
    assert services["grafana"]["ports"] == ["3000:3000"]


def test_dockerfile_installs_the_project_as_one_image():
    text = DOCKERFILE.read_text()
    assert "\nFROM python:3.11-slim\n" in text
    assert '\nENTRYPOINT ["headwater"]\n' in text
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users, "the image runs as root"
    assert users[-1] not in {"root", "0"}
    assert "HEADWATER_SCHEMAS_DIR=/app/schemas" in text  # the installed package has no schemas/
    ignored = (ROOT / ".dockerignore").read_text()
    for source in re.findall(r"^COPY (\S+)", text, re.M):
        assert (ROOT / source).exists(), source
        assert f"!{source}" in ignored, f".dockerignore keeps {source} out of the context"


def test_sample_stream_replays_with_delayed_labels():
    assert STREAM.stat().st_size < 200_000
    with gzip.open(STREAM, "rt") as fh:
        assert fh.readline().startswith("{")
    assert scan(STREAM) == 1250
    assert all(event.label is not None for event in read_events(STREAM))


def test_the_readme_compose_instructions_match_the_compose_file():
    """Service names, host ports and the replay profile, as the README's Docker Compose
    section gives them, are docker-compose.yaml's."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Docker Compose", 1)[1].split("\n## ", 1)[0]
    services = load_yaml(COMPOSE)["services"]
    rows = re.findall(r"^\| `([a-z-]+)` \| (.*) \| (.*) \|$", section, re.M)
    assert {name for name, _, _ in rows} == set(services)
    for name, _, port in rows:
        published = [str(p).split(":")[0] for p in services[name].get("ports", [])]
        host = re.match(r"^(\d+)", port.strip())
        assert published == ([host.group(1)] if host else []), (name, port, published)
        metrics = re.search(r"metrics (\d+)", port)
        if metrics:
            env = services[name]["environment"]
            assert env["HEADWATER_METRICS_PORT"] == int(metrics.group(1)), name
    profiles = {name: s["profiles"] for name, s in services.items() if "profiles" in s}
    assert profiles == {"replay": ["replay"], "scorer": ["scorers"]}
    assert "docker compose --profile replay run --rm replay" in section
    assert "docker compose --profile scorers up -d --scale scorer=" in section
    assert "docker compose up -d" in section
    replay_row = next(r for r in rows if r[0] == "replay")
    assert " ".join(services["replay"]["command"]) in replay_row[1]
    for name in PIPELINE_SERVICES:
        row = next(r for r in rows if r[0] == name)
        assert " ".join(services[name]["command"]) in row[1], name
