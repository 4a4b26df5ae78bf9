"""Checks across a conf's fields that its types alone cannot express."""

from __future__ import annotations

import importlib.util
import re
import urllib.parse
from pathlib import Path

from .decode import _NAME, _Problems
from .model import AdminSection, Conf, HistorySection, RedisSection


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
