"""The whole check a conf passes before it runs: what ``tocsin check`` does, reused by a
reload, plus what a reload cannot change in a running process."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import msgspec

from ..conf import Conf, read_conf
from ..conf_lines import with_lines
from ..durations import Duration
from ..errors import PluginError
from ..metrics import conf_digest
from ..plan import Plan, check_plan
from ..plugins import Registry, load_registry
from ..render import SampleReport, render_samples

#: Settings a running process keeps until it restarts: each is baked into something a
#: reload does not rebuild (the Redis connection and key layout, the listening socket
#: and its guards, the routers, the archive, the metrics site, logging, the retention
#: and watch tasks, imported plugin modules).
RESTART_ONLY: dict[str, tuple[str, ...]] = {
    "gateway": ("data_dir", "processes", "timezone", "log_format", "log_traffic"),
    "intake": (
        "host",
        "port",
        "max_body",
        "dedupe_window",
        "public_url",
        "unknown_types",
        "header_timeout",
        "body_timeout",
        "keepalive_timeout",
        "max_connections",
        "max_connections_per_peer",
    ),
    "redis": (
        "url",
        "embedded_server",
        "prefix",
        "wait_aof",
        "cluster",
        "shards",
        "wait_replicas",
    ),
    "worker": ("router_batch", "router_reclaim_after"),
    "history": (
        "retention",
        "hot_window",
        "archive",
        "archive_url",
        "archive_schema",
        "archive_batch",
        "archive_rate",
        "archive_max_lag",
    ),
    "metrics": ("intake", "port", "host", "refresh"),
    "plugins": ("block", "modules"),
    "retention": (
        "events",
        "deliveries",
        "dead_letters",
        "scenarios",
        "outboxes",
        "audit",
        "interval",
        "batch",
    ),
    "watch": ("every", "watches"),
}


@dataclass
class Checked:
    """A conf as ``tocsin check`` sees it: the plan as far as it could be built and every
    problem (``file:line: path: reason``); ``plan`` runs only if ``problems`` is empty."""

    path: Path
    conf: Conf | None = None
    registry: Registry | None = None
    plan: Plan | None = None
    problems: list[str] = field(default_factory=list)
    report: SampleReport | None = None
    #: ``tocsin_conf_hash`` of the files read.
    digest: float = 0.0
    #: ``section.field: old -> new``: changed in the files, kept at the running value.
    needs_restart: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.plan is not None and not self.problems


def _sample_problems(plan: Plan, samples: Path | None, checked: Checked) -> list[str]:
    # A folder named (on the command line, or in conf other than the default) must exist:
    # a typo would otherwise pass as "no sample events".
    named = samples
    if named is None and plan.conf.gateway.samples != "examples":
        named = plan.conf.samples_dir
    if named is not None and not named.is_dir():
        checked.report = SampleReport(folder=named)
        if samples is not None:
            return [f"--samples: no folder {samples}"]
        return with_lines([f"{plan.conf.path}: gateway.samples: no folder {named}"])
    checked.report = render_samples(plan, samples)
    return checked.report.problems


def _show(value: object) -> str:
    if isinstance(value, Duration):
        return f"{float(value):g}s"
    if isinstance(value, str) and "@" in value:
        return "(a URL with credentials)"  # redis.url: never in a log
    return repr(value)


def pin_restart_only(conf: Conf, running: Conf) -> tuple[Conf, list[str]]:
    """``conf`` with every restart-only setting set back to the running one's, and what
    differed (secrets shown as changed, never printed)."""
    changed: list[str] = []
    sections = {}
    for section, names in RESTART_ONLY.items():
        new, old = getattr(conf, section), getattr(running, section)
        kept = {}
        for name in names:
            if getattr(new, name) != getattr(old, name):
                was, now = _show(getattr(old, name)), _show(getattr(new, name))
                changed.append(f"{section}.{name}: {was} -> {now}")
                kept[name] = getattr(old, name)
        if kept:
            sections[section] = msgspec.structs.replace(new, **kept)
    return (replace(conf, **sections) if sections else conf), changed


def check_conf(path: Path, samples: Path | None = None, running: Conf | None = None) -> Checked:
    """Read, build and render-check the conf at ``path``, as ``tocsin check`` does.

    ``running``: the conf of a running process; restart-only settings that changed are
    kept at its values (and listed in ``needs_restart``) before the plan is built, so
    the plan is the one this process can actually run. Never raises for a bad conf."""
    checked = Checked(path=path)
    conf, problems = read_conf(path)
    if conf is None:
        checked.problems = problems
        return checked
    checked.digest = conf_digest(conf.files or [conf.path])
    if running is not None:
        conf, checked.needs_restart = pin_restart_only(conf, running)
    checked.conf = conf
    try:
        registry = load_registry(blocked=conf.plugins.block, modules=conf.plugins.modules)
    except PluginError as exc:
        checked.problems = with_lines([*problems, f"plugins: {exc}"])
        return checked
    checked.registry = registry
    plan, plan_problems = check_plan(conf, registry)
    checked.problems = with_lines([*problems, *plan_problems])
    checked.problems += _sample_problems(plan, samples, checked)
    checked.plan = plan
    return checked
