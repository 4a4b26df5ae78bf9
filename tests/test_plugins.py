"""Plugins: discovered through real entry points, used by a real ``tocsin serve``, and every
way a plugin can be wrong is a start-up error that names the plugin.

The third-party plugin is the one the plugin guide shows (docs/examples/tocsin-file-channel),
"installed" the way pip would: the package plus a ``*.dist-info`` folder declaring its
entry point, on the ``PYTHONPATH`` of a ``tocsin`` subprocess.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gateway import PluginError
from gateway.cli import main
from gateway.conf import load_conf
from gateway.plan import build_plan
from gateway.plugins import DISABLE_AUTOLOAD_ENV, load_registry
from gateway.redis_server import free_port

from .conftest import INTAKE_SECRET, make_event, signed_headers, write_conf
from .procs import TOCSIN_SCRIPT, run_tocsin

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "tocsin-file-channel"
GUIDE = ROOT / "docs" / "plugins.md"
#: A redis URL for confs that are only checked, never served.
UNUSED_REDIS = "redis://127.0.0.1:1/0"


# -- helpers -------------------------------------------------------------------------


def line_of(conf: Path, written: str) -> int:
    """The number of the first line of ``conf`` that starts with ``written``."""
    lines = conf.read_text().splitlines()
    return next(i for i, text in enumerate(lines, 1) if text.strip().startswith(written))


def install_dist(
    site: Path, dist: str, version: str, entry_points: dict[str, str], package: Path | None = None
) -> Path:
    """What ``pip install`` leaves behind: the package and a dist-info with entry points."""
    site.mkdir(parents=True, exist_ok=True)
    if package is not None:
        shutil.copytree(package, site / package.name, ignore=shutil.ignore_patterns("__pycache__"))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[tocsin]\n{lines}")
    return site


@pytest.fixture
def file_channel_site(tmp_path: Path) -> Path:
    """The guide's example plugin, installed into a fresh site folder."""
    return install_dist(
        tmp_path / "site",
        "tocsin-file-channel",
        "0.1.0",
        {"file_log": "tocsin_file_channel"},
        package=EXAMPLE / "tocsin_file_channel",
    )


def subprocess_env(*pythonpath: Path, **extra: str) -> dict[str, str]:
    """The test's environment without TOCSIN_* settings, plus these PYTHONPATH entries."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOCSIN_")}
    paths = [str(p) for p in pythonpath]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(extra)
    return env


def plugin_block(output: str, name: str) -> list[str]:
    """The lines `tocsin plugins` prints for one plugin: its header and what it registers."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.split(" ", 1)[0] == name:
            block = [line]
            for following in lines[i + 1 :]:
                if not following.startswith("    "):
                    break
                block.append(following.strip())
            return block
    raise AssertionError(f"plugin {name!r} not listed in:\n{output}")


def listed_plugins(output: str) -> list[str]:
    return [line.split(" ", 1)[0] for line in output.splitlines() if line and line[0] != " "]


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def plugin_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., str]]:
    """``write(name, source)``: a plugin module importable for this test only."""
    folder = tmp_path / "modules"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    written: list[str] = []

    def write(name: str, source: str) -> str:
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        written.append(name)
        return name

    yield write
    for name in written:
        sys.modules.pop(name, None)


NULL_CHANNEL = """
    from collections.abc import Sequence
    from typing import Any

    import msgspec

    from gateway import Channel, Delivery, hookimpl


    class NullConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
        pass


    class {cls}(Channel[NullConfig]):
        type_name = "{type_name}"
        config_type = NullConfig

        async def send(self, delivery: Delivery) -> None:
            pass


    @hookimpl
    def tocsin_register_channels() -> Sequence[type[Channel[Any]]]:
        return [{cls}]
"""


def null_channel(type_name: str, cls: str = "NullChannel") -> str:
    return NULL_CHANNEL.format(type_name=type_name, cls=cls)


def conf_with_module_channel(tmp_path: Path, plugins: str, channel_type: str) -> Path:
    """A checkable conf whose only channel is of ``channel_type``."""
    rules = f"""
    [channels.sink]
    type = "{channel_type}"

    [rules.to-sink]
    events = ["payment.*"]
    [[rules.to-sink.actions]]
    channel = "sink"
    """
    return write_conf(tmp_path, redis_url=UNUSED_REDIS, rules=rules, extra=plugins)


# -- a third-party plugin, found through real entry points and used ------------------------


def test_installed_plugin_is_listed_with_its_version_and_channel_type(tmp_path, file_channel_site):
    result = run_tocsin("plugins", env=subprocess_env(file_channel_site), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    header, *registers = plugin_block(result.stdout, "file_log")
    assert header.startswith("file_log 0.1.0 ")
    assert "tocsin-file-channel" in header
    assert registers == ["channel type: file_log"]
    # the built-in ones are still there, found the same way
    assert {"tocsin-core", "json_hook"} <= set(listed_plugins(result.stdout))


def test_installed_plugin_delivers_in_a_real_gateway(tmp_path, redis_url, file_channel_site):
    audit = tmp_path / "audit" / "deliveries.jsonl"
    audit.parent.mkdir()
    port = free_port()
    conf = tmp_path / "tocsin.toml"
    conf.write_text(
        textwrap.dedent(
            f"""
            [gateway]
            data_dir = "var"
            [intake]
            port = {port}
            secrets = ["{INTAKE_SECRET}"]
            [redis]
            url = "{redis_url}"
            [worker]
            shutdown_grace = "2s"

            [channels.audit]
            type = "file_log"
            path = "{audit}"

            [rules.audit-payments]
            events = ["payment.*"]
            [[rules.audit-payments.actions]]
            channel = "audit"
            to = ["customer"]
            """
        )
    )
    event = make_event()
    body = json.dumps(event).encode()
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [TOCSIN_SCRIPT, "serve", "--conf", str(conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=subprocess_env(file_channel_site),
            cwd=tmp_path,
        )
    try:
        deadline = time.monotonic() + 20
        status = None
        while status is None:
            assert proc.poll() is None, f"tocsin serve exited:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"intake never answered:\n{log_path.read_text()}"
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/events", data=body, headers=signed_headers(body)
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    status = response.status
            except urllib.error.URLError:
                time.sleep(0.05)  # not listening yet
        assert status == 202

        while not (audit.exists() and audit.read_text().endswith("\n")):
            assert proc.poll() is None, f"tocsin serve exited:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"nothing written:\n{log_path.read_text()}"
            time.sleep(0.05)
        [line] = audit.read_text().splitlines()
        written = json.loads(line)
        assert written["event_id"] == event["id"]
        assert written["type"] == "payment.succeeded"
        assert written["delivery_id"].startswith("msg_")
        assert written["recipient"]["email"] == "client@example.com"

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_file_channel_missing_folder_fails_the_delivery_for_good(
    tmp_path, redis_url, redis_client, start_gateway, monkeypatch
):
    """The example raises PermanentError: the delivery lands in the dead letters at once."""
    package_dir = tmp_path / "local"
    shutil.copytree(EXAMPLE / "tocsin_file_channel", package_dir / "tocsin_file_channel")
    monkeypatch.syspath_prepend(str(package_dir))
    missing = tmp_path / "no-such-folder" / "audit.jsonl"
    rules = f"""
    [channels.audit]
    type = "file_log"
    path = "{missing}"

    [rules.audit-payments]
    events = ["payment.*"]
    [[rules.audit-payments.actions]]
    channel = "audit"
    """
    plugins = '\n[plugins]\nmodules = ["tocsin_file_channel"]\n'
    try:
        gw = await start_gateway(
            write_conf(tmp_path, redis_url=redis_url, rules=rules, extra=plugins)
        )
        event = make_event()
        assert (await gw.post(event))[0] == 202
        deadline = time.monotonic() + 10
        while not (dead := redis_client.xrange("tocsin:dead")):
            assert time.monotonic() < deadline, "the delivery never reached the dead letters"
            await asyncio.sleep(0.05)
    finally:
        sys.modules.pop("tocsin_file_channel", None)
    [(_, record)] = dead
    assert record[b"channel"] == b"audit"
    assert str(missing.parent) in record[b"reason"].decode()
    assert not missing.parent.exists()


def test_guide_shows_the_example_plugin_as_it_is():
    """The plugin guide quotes the example's files verbatim: copying them must work."""
    guide = GUIDE.read_text()
    for path in (EXAMPLE / "pyproject.toml", EXAMPLE / "tocsin_file_channel" / "__init__.py"):
        assert path.read_text().strip() in guide, f"{path} differs from what the guide shows"


def test_guide_condition_and_filter_example_works(tmp_path, plugin_modules):
    """The guide's condition + filter plugin, loaded with `[plugins] modules`, does what it says."""
    [source] = [
        block
        for block in re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.DOTALL)
        if "def tocsin_register_conditions" in block
    ]
    plugin_modules("acme_rules", source)
    rules = """
    [rules.mid-size]
    events = ["payment.succeeded"]
    when = ['data.amount between [1000, 5000]']
    [[rules.mid-size.actions]]
    channel = "hook"
    template = "receipt"
    """
    templates = {
        "receipt/json.j2": '{"paid": {{ data.amount | iso_amount(data.currency) | json }}}'
    }
    conf_path = write_conf(
        tmp_path,
        redis_url=UNUSED_REDIS,
        rules=rules,
        templates=templates,
        extra='\n[plugins]\nmodules = ["acme_rules"]\n',
    )
    result = cli("check", str(conf_path))
    assert result.exit_code == 0, result.output

    conf = load_conf(conf_path)
    plan = build_plan(conf, load_registry(modules=conf.plugins.modules))
    [rule] = plan.rules
    assert rule.matches(make_event(data={"amount": 1250, "currency": "EUR"}))
    assert not rule.matches(make_event(data={"amount": 99_999, "currency": "EUR"}))
    assert not rule.matches(make_event(data={"currency": "EUR"}))
    rendered = plan.templates.render(
        "receipt", "json", None, make_event(data={"amount": 1250, "currency": "EUR"})
    )
    assert json.loads(rendered) == {"paid": "12.50 EUR"}
    rendered = plan.templates.render(
        "receipt", "json", None, make_event(data={"amount": 1250, "currency": "JPY"})
    )
    assert json.loads(rendered) == {"paid": "1250 JPY"}


def test_guide_condition_rejects_a_bad_operand_at_check_time(tmp_path, plugin_modules):
    [source] = [
        block
        for block in re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.DOTALL)
        if "def tocsin_register_conditions" in block
    ]
    plugin_modules("acme_rules", source)
    rules = """
    [rules.mid-size]
    events = ["payment.succeeded"]
    when = ['data.amount between 1000']
    [[rules.mid-size.actions]]
    channel = "hook"
    """
    conf_path = write_conf(
        tmp_path,
        redis_url=UNUSED_REDIS,
        rules=rules,
        extra='\n[plugins]\nmodules = ["acme_rules"]\n',
    )
    result = cli("check", str(conf_path))
    assert result.exit_code == 2
    assert f"{conf_path}:{line_of(conf_path, 'when')}: rules.mid-size.when[0]: " in result.stderr
    assert "[low, high]" in result.stderr


# -- switching plugins off -----------------------------------------------------------------


def test_disabling_autoload_leaves_only_the_core(tmp_path, monkeypatch):
    conf_path = write_conf(tmp_path, redis_url=UNUSED_REDIS)
    assert cli("check", str(conf_path)).exit_code == 0

    monkeypatch.setenv(DISABLE_AUTOLOAD_ENV, "1")
    listing = cli("plugins", "--conf", str(conf_path))
    assert listing.exit_code == 0, listing.output
    assert listed_plugins(listing.stdout) == ["tocsin-core"]
    assert "json_hook" not in listing.stdout

    result = cli("check", str(conf_path))
    assert result.exit_code == 2
    line = line_of(conf_path, 'type = "json_hook"')
    assert f"{conf_path}:{line}: channels.hook.type: unknown channel type 'json_hook'" in (
        result.stderr
    )


def test_disabling_autoload_in_a_subprocess(tmp_path):
    """What an operator types: the variable in the environment of the real command."""
    conf_path = write_conf(tmp_path, redis_url=UNUSED_REDIS)
    env = subprocess_env(**{DISABLE_AUTOLOAD_ENV: "1"})
    listing = run_tocsin("plugins", env=env, cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert listed_plugins(listing.stdout) == ["tocsin-core"]
    result = run_tocsin("check", str(conf_path), env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown channel type 'json_hook'" in result.stderr


def test_autoload_disabled_still_loads_conf_modules(tmp_path, monkeypatch, plugin_modules):
    plugin_modules("acme_sink", null_channel("acme_sink"))
    conf_path = conf_with_module_channel(
        tmp_path, '\n[plugins]\nmodules = ["acme_sink"]\n', "acme_sink"
    )
    monkeypatch.setenv(DISABLE_AUTOLOAD_ENV, "1")
    listing = cli("plugins", "--conf", str(conf_path))
    assert listed_plugins(listing.stdout) == ["tocsin-core", "acme_sink"]
    # the conf's module channel is accepted; only the entry-point one is unknown
    result = cli("check", str(conf_path))
    assert result.exit_code == 2
    [problem] = [line for line in result.stderr.splitlines() if "channels." in line]
    assert "unknown channel type 'json_hook' (known: acme_sink;" in problem


def test_conf_can_block_a_plugin(tmp_path):
    conf_path = write_conf(
        tmp_path, redis_url=UNUSED_REDIS, extra='[plugins]\nblock = ["json_hook"]\n'
    )
    listing = cli("plugins", "--conf", str(conf_path))
    assert listing.exit_code == 0, listing.output
    assert "json_hook" not in listed_plugins(listing.stdout)
    assert "tocsin-core" in listed_plugins(listing.stdout)
    assert "blocked by conf: json_hook" in listing.stdout

    result = cli("check", str(conf_path))
    assert result.exit_code == 2
    line = line_of(conf_path, 'type = "json_hook"')
    assert f"{conf_path}:{line}: channels.hook.type: unknown channel type 'json_hook'" in (
        result.stderr
    )
    assert "json_hook" not in load_registry(blocked=["json_hook"]).channels


def test_conf_modules_register_a_local_plugin(tmp_path, plugin_modules):
    plugin_modules("acme_sink", null_channel("acme_sink"))
    conf_path = conf_with_module_channel(
        tmp_path, '\n[plugins]\nmodules = ["acme_sink"]\n', "acme_sink"
    )
    listing = cli("plugins", "--conf", str(conf_path))
    assert listing.exit_code == 0, listing.output
    header, *registers = plugin_block(listing.stdout, "acme_sink")
    assert "module acme_sink" in header
    assert registers == ["channel type: acme_sink"]

    result = cli("check", str(conf_path))
    assert result.exit_code == 0, result.output
    assert "ok (2 channels, 1 rules" in result.stdout


def test_a_broken_installed_plugin_is_named_and_can_be_blocked(tmp_path, monkeypatch):
    site = install_dist(
        tmp_path / "site", "tocsin-broken", "1.2.3", {"broken": "tocsin_broken_not_installed"}
    )
    monkeypatch.syspath_prepend(str(site))
    conf_path = write_conf(tmp_path, redis_url=UNUSED_REDIS)

    result = cli("check", str(conf_path))
    assert result.exit_code == 2
    assert "plugin 'broken'" in result.stderr
    assert "tocsin_broken_not_installed" in result.stderr

    blocked = write_conf(
        tmp_path / "blocked", redis_url=UNUSED_REDIS, extra='[plugins]\nblock = ["broken"]\n'
    )
    result = cli("check", str(blocked))
    assert result.exit_code == 0, result.output


def test_installed_plugin_also_listed_in_modules_loads_once(
    tmp_path, file_channel_site, monkeypatch
):
    """Installing a plugin and also naming it in `[plugins] modules` is harmless."""
    monkeypatch.syspath_prepend(str(file_channel_site))
    audit = tmp_path / "audit.jsonl"
    rules = f"""
    [channels.audit]
    type = "file_log"
    path = "{audit}"
    """
    conf_path = write_conf(
        tmp_path,
        redis_url=UNUSED_REDIS,
        rules=rules,
        extra='\n[plugins]\nmodules = ["tocsin_file_channel"]\n',
    )
    try:
        result = cli("check", str(conf_path))
        listing = cli("plugins", "--conf", str(conf_path))
    finally:
        sys.modules.pop("tocsin_file_channel", None)
    assert result.exit_code == 0, result.output
    assert listing.exit_code == 0, listing.output
    assert "channel type: file_log" in listing.stdout


# -- a plugin that is wrong is a start-up error naming it ---------------------------------


def test_two_plugins_registering_one_channel_type_are_both_named(tmp_path, plugin_modules):
    first = plugin_modules("acme_first", null_channel("acme_dup", "First"))
    second = plugin_modules("acme_second", null_channel("acme_dup", "Second"))
    with pytest.raises(PluginError) as info:
        load_registry(modules=[first, second])
    message = str(info.value)
    assert "'acme_dup'" in message
    assert "'acme_first'" in message and "'acme_second'" in message

    conf_path = conf_with_module_channel(
        tmp_path, '\n[plugins]\nmodules = ["acme_first", "acme_second"]\n', "acme_dup"
    )
    result = cli("check", str(conf_path))
    assert result.exit_code == 2
    assert "acme_first" in result.stderr and "acme_second" in result.stderr


def test_a_plugin_taking_a_builtin_name_is_a_conflict(plugin_modules):
    """A third-party json_hook cannot silently replace the built-in one."""
    impostor = plugin_modules("acme_impostor", null_channel("json_hook"))
    with pytest.raises(PluginError) as info:
        load_registry(modules=[impostor])
    assert "'json_hook'" in str(info.value) and "'acme_impostor'" in str(info.value)
    # blocking one of them is the way out
    assert "json_hook" in load_registry(modules=[impostor], blocked=["json_hook"]).channels


def test_misspelt_hook_names_the_plugin_and_the_hook(tmp_path, plugin_modules):
    name = plugin_modules(
        "acme_typo",
        """
        from gateway import hookimpl

        @hookimpl
        def tocsin_register_channel():
            return []
        """,
    )
    with pytest.raises(PluginError) as info:
        load_registry(modules=[name])
    assert "'acme_typo'" in str(info.value)
    assert "tocsin_register_channel" in str(info.value)

    conf_path = write_conf(
        tmp_path, redis_url=UNUSED_REDIS, extra='[plugins]\nmodules = ["acme_typo"]\n'
    )
    result = cli("check", str(conf_path))
    assert result.exit_code == 2
    assert "acme_typo" in result.stderr and "tocsin_register_channel" in result.stderr


def test_plugin_failing_to_import_is_named(plugin_modules):
    name = plugin_modules("acme_needs_dep", "import acme_dependency_not_installed\n")
    with pytest.raises(PluginError) as info:
        load_registry(modules=[name])
    assert "'acme_needs_dep'" in str(info.value)
    assert "acme_dependency_not_installed" in str(info.value)


def test_plugin_raising_at_import_is_named(plugin_modules):
    name = plugin_modules("acme_raises", 'raise RuntimeError("ACME_API_KEY is not set")\n')
    with pytest.raises(PluginError) as info:
        load_registry(modules=[name])
    assert "'acme_raises'" in str(info.value)
    assert "ACME_API_KEY is not set" in str(info.value)


def test_misspelt_module_name_in_conf_is_named(tmp_path):
    conf_path = write_conf(
        tmp_path, redis_url=UNUSED_REDIS, extra='[plugins]\nmodules = ["acme_no_such_module"]\n'
    )
    result = cli("check", str(conf_path))
    assert result.exit_code == 2
    assert "'acme_no_such_module'" in result.stderr
