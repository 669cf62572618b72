"""Every Redis key Headwater uses, built in one place.

All live under `headwater:<pipeline>:`, so several pipelines share one Redis and an ACL
`~headwater:*` covers them:

- `<owner>:ckpt:*`: checkpoint versions, epoch and latest (shared/checkpoint/store.py) of
  each stateful owner: `learner`, `features-p<N>`, `ingest-events-p<N>`,
  `monitor-<topic>-p<N>`, ...
- `learner:status` (hash: role, counters, metrics), `learner:spec` (JSON of the spec it
  runs), `learner:lease` (the active learner's lease), `learner:snapshot` (its models for
  readers, shared/snapshot.py), `learner:snapshot:v<N>` and `learner:snapshot:versions`
  (the last K snapshots, for scorers pinned to one): the learner.
- `learner:paused`: set of paused models, written by the API for operators.
- `learner:history`: JSON of each model's metrics over the stream (the learner, for the
  pipeline page); `scorer:served`: hash of the version each scorer replica serves.
- `learner:rollout`, `learner:rollout:events`, `learner:rollout:requests`: the rollout's
  state and newest decisions (the learner), and operators' requests (the API, the CLI).
- `ingest-status:<instance>`, `features-status:<instance>`: hashes of one instance's counters.
- `features:<entity>`: an entity's latest features, with a TTL (the features service).
- `monitor:alerts` (+ `:data`): the latest drift alerts (the monitor).

One key is outside every pipeline: `headwater:pipelines`, the registry, a set of the
pipelines' names. Whoever writes a status hash or drift alerts adds its pipeline to it
(shared/runtime/status.py, shared/alert_store.py), so readers list pipelines with one
SMEMBERS instead of scanning the keyspace.
"""

from __future__ import annotations

from dataclasses import dataclass

ROOT = "headwater"
PIPELINES = f"{ROOT}:pipelines"  # the registry: a set of pipeline names


@dataclass(frozen=True)
class PipelineKeys:
    pipeline: str

    @property
    def base(self) -> str:
        return f"{ROOT}:{self.pipeline}"

    def checkpoint(self, owner: str) -> str:
        """Prefix of one owner's checkpoint keys (versions, epoch, latest)."""
        return f"{self.base}:{owner}:ckpt"

    @property
    def learner_status(self) -> str:
        return f"{self.base}:learner:status"

    @property
    def learner_spec(self) -> str:
        return f"{self.base}:learner:spec"

    @property
    def learner_history(self) -> str:
        """The learner's metric series over the stream (JSON), for the API's pages."""
        return f"{self.base}:learner:history"

    @property
    def learner_lease(self) -> str:
        return f"{self.base}:learner:lease"

    @property
    def learner_snapshot(self) -> str:
        return f"{self.base}:learner:snapshot"

    @property
    def learner_snapshot_versions(self) -> str:
        """Sorted set of the snapshot versions kept (shared/snapshot.py)."""
        return f"{self.learner_snapshot}:versions"

    def learner_snapshot_version(self, version: int) -> str:
        """One kept snapshot version, for a scorer pinned to it."""
        return f"{self.learner_snapshot}:v{version}"

    @property
    def learner_rollout(self) -> str:
        """JSON: the rollout's routing, phase, test and agreement (shared/rollout/store.py)."""
        return f"{self.base}:learner:rollout"

    @property
    def learner_rollout_events(self) -> str:
        """List of the newest rollout decisions (model-event/v1 as JSON), newest first."""
        return f"{self.base}:learner:rollout:events"

    @property
    def learner_rollout_requests(self) -> str:
        """List of operators' rollout requests, oldest first (the API, the CLI)."""
        return f"{self.base}:learner:rollout:requests"

    @property
    def scorers_served(self) -> str:
        """Hash: each scorer replica's served snapshot version (shared/served_versions.py)."""
        return f"{self.base}:scorer:served"

    @property
    def learner_paused(self) -> str:
        return f"{self.base}:learner:paused"

    def instance_status(self, service: str, instance: str) -> str:
        """Counters of one instance of a partitioned service (ingest, features)."""
        return f"{self.base}:{service}-status:{instance}"

    @property
    def entity_features(self) -> str:
        """Prefix of the features store: one key per entity."""
        return f"{self.base}:features:"

    @property
    def monitor_alerts(self) -> str:
        return f"{self.base}:monitor:alerts"

    def marks(self) -> list[str]:
        """Keys whose presence shows the pipeline exists (a learner ran, or the monitor):
        what a Redis written before the registry is scanned for."""
        return [
            self.learner_status,
            f"{self.checkpoint('learner')}:latest",
            self.monitor_alerts,
            self.learner_spec,
        ]


def pipeline_patterns() -> list[str]:
    """SCAN patterns that find every pipeline's marks, and its features instances: how
    pipelines were found before the registry, and how a Redis written before it is
    registered (services/api/registry.py)."""
    marks = PipelineKeys("*").marks()
    return [*marks, PipelineKeys("*").instance_status("features", "*")]


def pipeline_of(key: str) -> str:
    """The pipeline a key belongs to."""
    return key.split(":")[1]
