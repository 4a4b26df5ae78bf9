"""Plugin discovery and the one place that calls ``pm.hook.*``.

Built-in channels are discovered exactly like third-party ones, through the ``tocsin``
entry-point group; the core's own defaults (conditions, filters, the Standard Webhooks
source) are registered directly because the core cannot run without them.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import default_plugins, hookspecs
from .channel import Channel
from .conditions import Condition
from .errors import PluginError
from .markers import PROJECT
from .source import Source

ENTRY_POINT_GROUP = "tocsin"
#: Set to 1 to skip entry points (only the core and ``plugins.modules`` load).
DISABLE_AUTOLOAD_ENV = "TOCSIN_DISABLE_PLUGIN_AUTOLOAD"
CORE_PLUGIN_NAME = "tocsin-core"


@dataclass
class PluginInfo:
    name: str
    version: str
    origin: str
    registers: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Registry:
    """What the loaded plugins registered, by kind and name."""

    channels: dict[str, type[Channel[Any]]] = field(default_factory=dict)
    sources: dict[str, type[Source[Any]]] = field(default_factory=dict)
    conditions: dict[str, Condition] = field(default_factory=dict)
    filters: dict[str, Callable[..., Any]] = field(default_factory=dict)
    plugins: list[PluginInfo] = field(default_factory=list)


def _autoload_disabled() -> bool:
    return os.environ.get(DISABLE_AUTOLOAD_ENV, "").strip().lower() in ("1", "true", "yes")


def make_plugin_manager(
    *, blocked: Iterable[str] = (), modules: Iterable[str] = (), autoload: bool | None = None
) -> tuple[pluggy.PluginManager, dict[str, PluginInfo]]:
    """A fresh manager: core defaults, entry points (unless disabled), extra modules."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    infos: dict[str, PluginInfo] = {}
    for name in blocked:
        pm.set_blocked(name)

    core_version = _version("tocsin")
    pm.register(default_plugins, name=CORE_PLUGIN_NAME)
    infos[CORE_PLUGIN_NAME] = PluginInfo(CORE_PLUGIN_NAME, core_version, "gateway.default_plugins")

    if autoload if autoload is not None else not _autoload_disabled():
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if pm.is_blocked(ep.name) or pm.has_plugin(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"plugin {ep.name!r} (entry point {ep.value}) failed to import: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            _register(pm, plugin, ep.name)
            dist = ep.dist
            version = dist.version if dist is not None else "?"
            origin = f"{dist.name if dist is not None else '?'} (entry point {ep.value})"
            infos[ep.name] = PluginInfo(ep.name, version, origin)

    for module_name in modules:
        if pm.is_blocked(module_name) or pm.has_plugin(module_name):
            continue
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise PluginError(
                f"plugin module {module_name!r} failed to import: {type(exc).__name__}: {exc}"
            ) from exc
        if pm.is_registered(module):  # installed too: its entry point registered it
            continue
        _register(pm, module, module_name)
        infos[module_name] = PluginInfo(module_name, "-", f"module {module_name}")
    return pm, infos


def _register(pm: pluggy.PluginManager, plugin: object, name: str) -> None:
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {name!r} is invalid: {exc}") from exc
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        # Typically a misspelt hook name: say which plugin and which hook.
        pm.unregister(name=name)
        raise PluginError(f"plugin {name!r}: {exc}") from exc


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _per_plugin(pm: pluggy.PluginManager, hook_name: str) -> list[tuple[str, Any]]:
    """Call a registration hook plugin by plugin, to know who registered what."""
    results: list[tuple[str, Any]] = []
    hook = getattr(pm.hook, hook_name)
    for impl in hook.get_hookimpls():
        others = [p for p in pm.get_plugins() if p is not impl.plugin]
        for result in pm.subset_hook_caller(hook_name, remove_plugins=others)():
            results.append((impl.plugin_name, result))
    return results


def _collect_named(
    pm: pluggy.PluginManager,
    hook_name: str,
    kind: str,
    name_of: Callable[[Any], str],
    infos: dict[str, PluginInfo],
) -> dict[str, Any]:
    found: dict[str, Any] = {}
    owners: dict[str, str] = {}
    for plugin_name, items in _per_plugin(pm, hook_name):
        pairs = items.items() if isinstance(items, dict) else ((name_of(i), i) for i in items)
        for name, item in pairs:
            if name in found:
                raise PluginError(
                    f"{kind} {name!r} is registered by both plugin {owners[name]!r} "
                    f"and plugin {plugin_name!r}; block one with [plugins] block = [...]"
                )
            found[name] = item
            owners[name] = plugin_name
            if plugin_name in infos:
                infos[plugin_name].registers.setdefault(kind, []).append(name)
    return found


def load_registry(
    *, blocked: Iterable[str] = (), modules: Iterable[str] = (), autoload: bool | None = None
) -> Registry:
    """Load plugins and collect everything they register; ``PluginError`` on conflicts."""
    pm, infos = make_plugin_manager(blocked=blocked, modules=modules, autoload=autoload)
    registry = Registry()
    registry.channels = _collect_named(
        pm, "tocsin_register_channels", "channel type", lambda c: c.type_name, infos
    )
    registry.sources = _collect_named(
        pm, "tocsin_register_sources", "source type", lambda s: s.type_name, infos
    )
    registry.conditions = _collect_named(
        pm, "tocsin_register_conditions", "condition", lambda c: c.operator, infos
    )
    registry.filters = _collect_named(
        pm, "tocsin_register_template_filters", "template filter", lambda f: f.__name__, infos
    )
    for kind, classes in (("channel type", registry.channels), ("source type", registry.sources)):
        for name, cls in classes.items():
            if not isinstance(cls, type) or not hasattr(cls, "config_type"):
                raise PluginError(f"{kind} {name!r} must be a class with a config_type")
    registry.plugins = list(infos.values())
    return registry
