"""Prometheus metrics: ``GET /metrics`` (docs/operations.md, "Metrics")."""

from .exposition import Exporter, conf_digest, multiprocess_dir, prepare_directory, refusal_counter
from .families import Known, Metrics, attempt_class
from .poller import Poller
from .snapshot import Snapshot, take_snapshot

__all__ = [
    "Exporter",
    "Known",
    "Metrics",
    "Poller",
    "Snapshot",
    "attempt_class",
    "conf_digest",
    "multiprocess_dir",
    "prepare_directory",
    "refusal_counter",
    "take_snapshot",
]
