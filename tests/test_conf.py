"""The conf as an operator meets it: ``tocsin check`` lists every mistake at once, as
``file:LINE: dotted.path: reason``, never prints a secret, and ``tocsin serve`` refuses a conf
that ``tocsin check`` refuses, with the same words.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gateway import ConfError, Duration, Secret
from gateway.cli import main
from gateway.conf import load_conf
from gateway.plan import build_plan
from gateway.plugins import load_registry
from gateway.redis_server import free_port

from .conftest import HOOK_SECRET, INTAKE_SECRET, write_conf
from .procs import TOCSIN_SCRIPT, run_tocsin

ROOT = Path(__file__).resolve().parent.parent
UNUSED_REDIS = "redis://127.0.0.1:1/0"
#: A secret nobody could mistake for anything else, to look for in outputs.
CANARY = "whsec_" + base64.b64encode(b"canary-secret-must-never-be-printed!").decode()


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def check(conf_path: Path) -> Result:
    return cli("check", str(conf_path))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def line_of(path: Path, key: str, nth: int = 1) -> int:
    """The number of the ``nth`` line of ``path`` that starts with ``key`` (spaces aside)."""
    found = [
        i for i, line in enumerate(path.read_text().splitlines(), 1) if line.strip().startswith(key)
    ]
    return found[nth - 1]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOCSIN_")}
    env.update(extra)
    return env


def problems_of(conf_path: Path) -> list[str]:
    """Every problem ``load_conf`` + ``build_plan`` find, as ``tocsin serve`` would see them."""
    try:
        conf = load_conf(conf_path)
        build_plan(conf, load_registry(blocked=conf.plugins.block, modules=conf.plugins.modules))
    except ConfError as exc:
        return exc.problems
    return []


@pytest.fixture(autouse=True)
def _no_tocsin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Confs here must not depend on the developer's TOCSIN_* variables."""
    for name in list(os.environ):
        if name.startswith("TOCSIN_"):
            monkeypatch.delenv(name)


# -- every mistake at once ---------------------------------------------------------------


def many_errors_conf(directory: Path) -> Path:
    """One conf with a mistake of every kind: structure, plugins, rules, templates, env."""
    write(directory / "templates" / "ok" / "json.j2", '{"id": {{ id | json }}}\n')
    write(
        directory / "templates" / "broken" / "json.j2",
        """
        {
          "id": {{ id | json }},
          "amount": {% if %}
        }
        """,
    )
    return write(
        directory / "tocsin.toml",
        f"""
        [gateway]
        data_dir = "var"

        [intake]
        port = "x"
        secrets = ["{INTAKE_SECRET}"]

        [redis]
        url = "${{TOCSIN_TEST_UNSET_REDIS_URL}}"

        [notifications]
        enabled = true

        [channels.hook]
        type = "json_hook"
        url = "http://127.0.0.1:9/hook"
        secret = "{HOOK_SECRET}"
        retries = 3

        [channels.ok]
        type = "json_hook"
        url = "http://hooks.example.invalid/ok"
        secret = "{HOOK_SECRET}"

        [channels.sms]
        type = "carrier_pigeon"

        [rules.large]
        events = ["payment.succeeded"]
        when = ['data.amount => 100000', 'amount > 1']
        [[rules.large.actions]]
        channel = "nowhere"
        [[rules.large.actions]]
        channel = "ok"
        template = "receipt"
        [[rules.large.actions]]
        channel = "ok"
        template = "broken"
        """,
    )


def test_check_reports_every_mistake_at_once(tmp_path):
    conf = many_errors_conf(tmp_path)
    templates = tmp_path / "templates"
    expected = [
        f"{conf}:11: notifications: unknown section",
        f"{conf}:5: intake.port: Expected `int`, got `str`",
        f"{conf}:9: redis.url: environment variable TOCSIN_TEST_UNSET_REDIS_URL is not set",
        # the unknown key's own line, not its table's
        f"{conf}:18: channels.hook: Object contains unknown field `retries`",
        f"{conf}:26: channels.sms.type: unknown channel type 'carrier_pigeon'",
        f"{conf}:30: rules.large.when[0]: unknown operator in '=> 100000'",
        f"{conf}:30: rules.large.when[1]: unknown field 'amount'",
        f"{conf}:32: rules.large.actions[0].channel: no channel 'nowhere'",
        f"{conf}:35: rules.large.actions[1].template: no folder 'receipt'",
        f"{templates / 'broken' / 'json.j2'}: line 3: ",
    ]
    result = check(conf)
    assert result.exit_code == 2
    missing = [line for line in expected if line not in result.stderr]
    assert missing == [], f"not reported:\n{missing}\n\ntocsin check said:\n{result.stderr}"
    # one line per mistake, nothing else, then the count
    *problems, summary = result.stderr.strip().splitlines()
    assert len(problems) == len(expected), result.stderr
    assert summary == f"{len(expected)} problem(s) in {conf}"
    assert result.stdout == ""


def test_plugin_stage_mistakes_are_listed_together(tmp_path):
    """Without structural errors, every channel, rule and template problem comes at once."""
    conf = many_errors_conf(tmp_path)
    text = conf.read_text()
    text = text.replace('port = "x"', "port = 8088").replace(
        "[notifications]\nenabled = true\n", ""
    )
    conf.write_text(text.replace("${TOCSIN_TEST_UNSET_REDIS_URL}", UNUSED_REDIS))
    result = check(conf)
    assert result.exit_code == 2
    problems = result.stderr.strip().splitlines()[:-1]
    assert len(problems) == 7, result.stderr
    for problem in problems:
        file, path, reason = problem.split(": ", 2)
        file, _, line = file.partition(".toml:")
        file = f"{file}.toml" if line else file
        assert Path(file).is_file() and path and reason, problem


def test_invalid_toml_names_the_line(tmp_path):
    conf = write(
        tmp_path / "tocsin.toml",
        """
        [intake]
        port = 8088
        host = "127.0.0.1
        """,
    )
    result = check(conf)
    assert result.exit_code == 2
    assert f"{conf}:3: invalid TOML" in result.stderr
    assert "line 3" in result.stderr


def test_missing_conf_file_is_reported(tmp_path):
    result = check(tmp_path / "nope.toml")
    assert result.exit_code == 2
    assert f"{tmp_path / 'nope.toml'}: file not found" in result.stderr


def test_template_folder_that_does_not_exist(tmp_path):
    conf = write_conf(tmp_path, redis_url=UNUSED_REDIS, extra="")
    conf.write_text(
        conf.read_text().replace('data_dir = "var"', 'data_dir = "var"\ntemplates = "tpl"')
    )
    result = check(conf)
    assert result.exit_code == 2
    line = line_of(conf, "templates =")
    assert f"{conf}:{line}: gateway.templates: no folder {tmp_path / 'tpl'}" in result.stderr


def test_invalid_intake_secret_is_a_conf_error_not_a_crash(tmp_path):
    conf = write_conf(tmp_path, redis_url=UNUSED_REDIS)
    conf.write_text(conf.read_text().replace(INTAKE_SECRET, "whsec_not base64!"))
    result = check(conf)
    assert result.exit_code == 2, result.output
    assert f"{conf}:{line_of(conf, 'secrets =')}: intake.secrets" in result.stderr
    assert "base64" in result.stderr


# -- includes ----------------------------------------------------------------------------


def test_includes_merge_channels_and_rules(tmp_path):
    conf = write_conf(tmp_path, redis_url=UNUSED_REDIS)
    conf.write_text('include = ["rules.d/*.toml"]\n' + conf.read_text())
    write(
        tmp_path / "rules.d" / "refunds.toml",
        f"""
        [channels.accounting]
        type = "json_hook"
        url = "http://127.0.0.1:9/accounting"
        secret = "{HOOK_SECRET}"

        [rules.refunds]
        events = ["refund.*"]
        [[rules.refunds.actions]]
        channel = "accounting"
        """,
    )
    write(
        tmp_path / "rules.d" / "transfers.toml",
        """
        [rules.transfers]
        events = ["transfer.failed"]
        [[rules.transfers.actions]]
        channel = "hook"
        """,
    )
    loaded = load_conf(conf)
    assert set(loaded.channels) == {"hook", "accounting"}
    assert set(loaded.rules) == {"all-payments", "refunds", "transfers"}
    assert loaded.rule_files["refunds"] == tmp_path / "rules.d" / "refunds.toml"

    result = check(conf)
    assert result.exit_code == 0, result.output
    assert "ok (2 channels, 3 rules" in result.stdout


def test_duplicate_rule_across_files_names_both_files(tmp_path):
    conf = write_conf(tmp_path, redis_url=UNUSED_REDIS)
    conf.write_text('include = ["rules.d/*.toml"]\n' + conf.read_text())
    included = write(
        tmp_path / "rules.d" / "copy.toml",
        """
        [rules.all-payments]
        events = ["payment.failed"]
        [[rules.all-payments.actions]]
        channel = "hook"
        """,
    )
    result = check(conf)
    assert result.exit_code == 2
    [problem] = result.stderr.strip().splitlines()[:-1]
    assert problem.startswith(f"{included}:1: rules.all-payments: ")
    assert str(conf) in problem.split(": ", 2)[2]


def test_included_file_cannot_hold_core_sections(tmp_path):
    conf = write_conf(tmp_path, redis_url=UNUSED_REDIS)
    conf.write_text('include = ["extra.toml"]\n' + conf.read_text())
    included = write(tmp_path / "extra.toml", "[intake]\nport = 9999\n")
    result = check(conf)
    assert result.exit_code == 2
    assert (
        f"{included}:1: intake: an included file may only hold channels, sources, rules, scenarios, windows, audiences"
        in (result.stderr)
    )


def test_include_of_a_missing_file_is_reported(tmp_path):
    conf = write_conf(tmp_path, redis_url=UNUSED_REDIS)
    conf.write_text('include = ["extra.toml"]\n' + conf.read_text())
    result = check(conf)
    assert result.exit_code == 2
    assert f"{conf}:1: include: extra.toml: file not found" in result.stderr


# -- environment and secrets ---------------------------------------------------------------


def test_env_interpolation_with_defaults(tmp_path, monkeypatch):
    conf = write_conf(tmp_path, redis_url="${TOCSIN_TEST_REDIS:-redis://127.0.0.1:6390/2}")
    monkeypatch.delenv("TOCSIN_TEST_REDIS", raising=False)
    assert load_conf(conf).redis.url == "redis://127.0.0.1:6390/2"
    monkeypatch.setenv("TOCSIN_TEST_REDIS", "redis://cache.internal:6379/5")
    assert load_conf(conf).redis.url == "redis://cache.internal:6379/5"
    # a variable set to "" is set: it wins over the default
    monkeypatch.setenv("TOCSIN_TEST_REDIS", "")
    assert load_conf(conf).redis.url == ""


def test_env_default_may_be_empty(tmp_path, monkeypatch):
    monkeypatch.delenv("TOCSIN_TEST_REDIS", raising=False)
    conf = write_conf(tmp_path, redis_url="${TOCSIN_TEST_REDIS:-}")
    assert load_conf(conf).redis.url == ""


def test_secrets_never_appear_in_any_output(tmp_path, monkeypatch):
    """Secrets from the environment, in a conf that is invalid all around them."""
    monkeypatch.setenv("TOCSIN_TEST_CANARY", CANARY)
    conf = write(
        tmp_path / "tocsin.toml",
        """
        [intake]
        secrets = ["${TOCSIN_TEST_CANARY}"]
        port = "not a port"
        [redis]
        url = "redis://127.0.0.1:1/0"

        [channels.wrong_type]
        type = "json_hook"
        url = "http://127.0.0.1:9/hook"
        secret = "${TOCSIN_TEST_CANARY}"
        previous_secrets = "${TOCSIN_TEST_CANARY}"

        [channels.typo]
        type = "json_hook"
        url = "http://127.0.0.1:9/hook"
        secrets = ["${TOCSIN_TEST_CANARY}"]

        [channels.bad_url]
        type = "json_hook"
        url = "ftp://127.0.0.1/hook"
        secret = "${TOCSIN_TEST_CANARY}"
        headers = { Authorization = "Bearer ${TOCSIN_TEST_CANARY}" }

        [rules.r]
        events = ["payment.*"]
        when = ['amount > 1']
        [[rules.r.actions]]
        channel = "bad_url"
        """,
    )
    outputs = {
        "check": check(conf).output,
        "plugins": cli("plugins", "--conf", str(conf)).output,
        "problems": "\n".join(problems_of(conf)),
    }
    served = run_tocsin(
        "serve", "--conf", str(conf), env=clean_env(TOCSIN_TEST_CANARY=CANARY), cwd=tmp_path
    )
    outputs["serve"] = served.stdout + served.stderr
    assert served.returncode == 2
    assert "problem(s)" in outputs["check"]
    leaked = [name for name, text in outputs.items() if CANARY in text]
    assert leaked == [], f"the secret was printed by: {leaked}"


def test_secret_values_are_masked(tmp_path, monkeypatch):
    monkeypatch.setenv("TOCSIN_TEST_CANARY", CANARY)
    conf = write_conf(tmp_path, redis_url=UNUSED_REDIS)
    conf.write_text(conf.read_text().replace(INTAKE_SECRET, "${TOCSIN_TEST_CANARY}"))
    loaded = load_conf(conf)
    [secret] = loaded.intake.secrets
    assert secret.reveal() == CANARY
    assert repr(secret) == "Secret('********')"
    assert str(secret) == f"{secret}" == "Secret('********')"
    assert CANARY not in repr(loaded)
    plan = build_plan(loaded, load_registry())
    assert CANARY not in repr(plan.channels["hook"].config)
    assert HOOK_SECRET not in repr(plan.channels["hook"].config)
    assert Secret("x") == Secret("x") and Secret("x") != Secret("y")


def test_redis_password_is_not_logged(tmp_path):
    """A password in redis.url (managed Redis) must not end up in the logs."""
    password = "canary-redis-password-do-not-log"
    closed_port = free_port()  # nothing listens there: serve retries and logs why
    conf = write_conf(tmp_path, redis_url=f"redis://:{password}@127.0.0.1:{closed_port}/0")
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [TOCSIN_SCRIPT, "serve", "--conf", str(conf), "--port", "0"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=clean_env(),
            cwd=tmp_path,
        )
    try:
        deadline = time.monotonic() + 20
        while f"127.0.0.1:{closed_port}" not in log_path.read_text():
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "serve never said why Redis is unreachable"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log_path.read_text()
    assert f"127.0.0.1:{closed_port}" in output  # it does say where it tried
    assert password not in output


# -- durations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("1h30m", 5400.0), (90, 90.0), ("250ms", 0.25), ("7d", 604800.0), (1.5, 1.5)],
)
def test_durations_parse(written, seconds):
    assert Duration.parse(written) == seconds


@pytest.mark.parametrize(
    ("written", "reason"),
    [
        ('"5 minutes"', "'5 minutes' is not a duration (try '30s', '5m'"),
        ('"-1"', "'-1' is not a duration"),
        ("-1", "a duration cannot be negative"),
        ("true", "a duration is a number of seconds or a string like '30s'"),
        ('""', "'' is not a duration"),
    ],
)
def test_bad_durations_are_refused_with_a_reason(tmp_path, written, reason):
    conf = write_conf(tmp_path, redis_url=UNUSED_REDIS)
    conf.write_text(
        conf.read_text().replace('shutdown_grace = "2s"', f"shutdown_grace = {written}")
    )
    result = check(conf)
    assert result.exit_code == 2
    line = line_of(conf, "shutdown_grace")
    assert f"{conf}:{line}: worker.shutdown_grace: {reason}" in result.stderr


def test_durations_in_conf(tmp_path):
    conf = write_conf(tmp_path, redis_url=UNUSED_REDIS)
    text = conf.read_text().replace('shutdown_grace = "2s"', 'shutdown_grace = "1h30m"')
    conf.write_text(text.replace("[redis]", 'tolerance = 90\ndedupe_window = "250ms"\n[redis]'))
    loaded = load_conf(conf)
    assert loaded.worker.shutdown_grace == 5400
    assert loaded.intake.tolerance == 90
    assert loaded.intake.dedupe_window == 0.25


# -- the shipped conf, and serve refusing what check refuses -------------------------------


def test_shipped_default_conf_passes_check():
    result = check(ROOT / "conf" / "tocsin.toml")
    assert result.exit_code == 0, result.output
    assert re.search(r": ok \(\d+ channels, \d+ rules, \d+ sources, \d+ templates", result.stdout)


def test_serve_refuses_an_invalid_conf_with_the_same_messages(tmp_path):
    conf = many_errors_conf(tmp_path)
    env = clean_env()
    checked = run_tocsin("check", str(conf), env=env, cwd=tmp_path)
    served = run_tocsin("serve", "--conf", str(conf), env=env, cwd=tmp_path)
    assert checked.returncode == 2
    assert served.returncode == 2
    problems = [line for line in checked.stderr.splitlines() if line.startswith(str(tmp_path))]
    assert problems, checked.stderr
    assert [line for line in served.stderr.splitlines() if line.startswith(str(tmp_path))] == (
        problems
    )
    assert "listening" not in served.stderr and "running roles" not in served.stderr
    assert "Traceback" not in served.stderr


def test_a_conf_folder_stands_for_its_tocsin_toml():
    result = check(ROOT / "conf")
    assert result.exit_code == 0, result.output
    assert f"{ROOT / 'conf' / 'tocsin.toml'}: ok (" in result.stdout
