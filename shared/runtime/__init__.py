"""The stream runtime: partition ownership and the checkpoint protocol, written once (DESIGN §4).

A service brings its record handling and what its state is (a `StateKind`); the runtime
owns the rest:
  ownership.py   take a unit of state (new epoch, which fences older owners; restore or
                 start fresh), let it go; one `FencedError`
  checkpoints.py the cadence, and the checkpoint as three named steps: flush_outputs,
                 persist_state (fenced), acknowledge_offsets
  partitioned.py the Kafka loop of a group-managed service: assignment, revocation, the
                 poll-handle-checkpoint loop, shutdown
  dead_letters.py the dead-letter envelope, sent and counted the same way by every service
  status.py      the per-instance status hash operators and the API read
"""
