"""Every Redis key Tocsin uses, in one place, under one prefix."""

from __future__ import annotations

from dataclasses import dataclass

ROUTER_GROUP = "router"
WORKER_GROUP = "workers"
SCENARIO_GROUP = "scenarios"


@dataclass(frozen=True)
class Keys:
    prefix: str = "tocsin"

    @property
    def events(self) -> str:
        """Stream of accepted canonical events: the router's queue, and, once routed,
        where they are kept for the retention (replay reads them there)."""
        return f"{self.prefix}:events"

    @property
    def routed_through(self) -> str:
        """An events stream entry id: every event at or below it has been routed."""
        return f"{self.prefix}:events:routed"

    def dedupe(self, event_id: str) -> str:
        """An event id's stream entry id: refuses duplicates within the dedupe window
        (the id says when it was accepted) and finds the event for replay."""
        return f"{self.prefix}:seen:{event_id}"

    def deliveries(self, channel: str) -> str:
        """Stream of delivery jobs for one configured channel."""
        return f"{self.prefix}:deliveries:{channel}"

    @property
    def retries(self) -> str:
        """Sorted set of deliveries waiting for their next attempt, scored by due time."""
        return f"{self.prefix}:retries"

    @property
    def dead(self) -> str:
        """Stream of dead-lettered deliveries, with the reason: kept for replay."""
        return f"{self.prefix}:dead"

    def record(self, delivery_id: str) -> str:
        """A delivery's status and attempts (JSON), expiring after the retention."""
        return f"{self.prefix}:delivery:{delivery_id}"

    def receipts(self, delivery_id: str) -> str:
        """List of a delivery's receipts from its provider (delivered to the handset...)."""
        return f"{self.prefix}:receipts:{delivery_id}"

    @property
    def history(self) -> str:
        """Sorted set of delivery ids by last update (ms): lists records by time."""
        return f"{self.prefix}:history"

    def endpoint(self, channel: str) -> str:
        """Hash of an endpoint's health: failing_since, disabled_at, disabled_reason."""
        return f"{self.prefix}:endpoint:{channel}"

    def scenario(self, name: str, key: str) -> str:
        """Hash of one scenario instance: ``rev`` (compare-and-set) and ``doc`` (JSON)."""
        return f"{self.prefix}:scenario:{name}:{key}"

    @property
    def scenarios(self) -> str:
        """Sorted set of ``name\x1fkey`` by last change (ms): lists instances."""
        return f"{self.prefix}:scenarios"

    def tombstone(self, name: str, key: str) -> str:
        """A cancel that came before its trigger: the scenario must not start for the key."""
        return f"{self.prefix}:tombstone:{name}:{key}"

    @property
    def timers(self) -> str:
        """Sorted set of scenario steps by due time (ms); due ones move to ``steps``."""
        return f"{self.prefix}:timers"

    @property
    def steps(self) -> str:
        """Stream of due scenario steps, read by group ``scenarios``."""
        return f"{self.prefix}:steps"
