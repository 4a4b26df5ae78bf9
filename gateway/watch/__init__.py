"""The gateway warning about itself: ``[watch]`` (docs/operations.md, "Watch")."""

from .conf import (
    ActivityWatch,
    DeadLettersWatch,
    EndpointWatch,
    QueueAgeWatch,
    WatchRule,
    WatchSection,
    read_watch,
)
from .watcher import Breach, Watcher, current_breaches

__all__ = [
    "ActivityWatch",
    "Breach",
    "DeadLettersWatch",
    "EndpointWatch",
    "QueueAgeWatch",
    "WatchRule",
    "WatchSection",
    "Watcher",
    "current_breaches",
    "read_watch",
]
