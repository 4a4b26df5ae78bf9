"""Reading a conf: the main file and its includes, ``${ENV_VAR}`` interpolation, merging
the named tables of every file, then the checks across sections (gateway/conf/checks.py)."""

from __future__ import annotations

import glob
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from ..brand import read_brand
from ..conf_lines import with_lines
from ..errors import ConfError
from ..watch.conf import read_watch, watch_references
from ..windows import WindowConf, window_problems
from .checks import _check_archive, _check_numbers, _check_retention, _check_sections
from .decode import _named, _plugin_tables, _Problems, _section
from .model import (
    AdminSection,
    Audience,
    Conf,
    GatewaySection,
    HistorySection,
    IntakeSection,
    MetricsSection,
    OutboundSection,
    PluginsSection,
    PrivacySection,
    RedisSection,
    RetentionSection,
    Rule,
    Scenario,
    WorkerSection,
    _Section,
)

CONF_FILE_NAME = "tocsin.toml"
DEFAULT_CONF_PATH = Path("conf") / CONF_FILE_NAME
CONF_ENV_VAR = "TOCSIN_CONF"


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
_TOML_LINE = re.compile(r"\(at line (\d+), column \d+\)$")


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
