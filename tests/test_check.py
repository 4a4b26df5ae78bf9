"""``tocsin check`` lists every problem in one run, once each, with the line it is on."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gateway.cli import main
from gateway.conf_lines import key_lines

from .conftest import write_conf

NO_REDIS = "redis://127.0.0.1:1/0"


def check(*args: str) -> Result:
    return CliRunner().invoke(main, ["check", *args])


def problems(result: Result) -> list[str]:
    """The problem lines, without the count that ends them."""
    *found, summary = result.output.strip().splitlines()
    assert summary == f"{len(found)} problem(s) in {summary.split(' in ', 1)[1]}", result.output
    return found


def line_of(conf: Path, written: str) -> int:
    lines = conf.read_text().splitlines()
    return next(i for i, text in enumerate(lines, 1) if text.strip().startswith(written))


@pytest.fixture(autouse=True)
def _no_tocsin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TOCSIN_CONF", "TOCSIN_TEST_UNSET_SECRET"):
        monkeypatch.delenv(name, raising=False)


def test_every_mistake_in_one_window_in_one_run(tmp_path):
    conf = write_conf(
        tmp_path,
        redis_url=NO_REDIS,
        extra="""
        [windows.courteous]
        start = "25:00"
        days = ["funday"]
        timezone = "Mars/Olympus"
        """,
    )
    found = problems(check(str(conf)))
    assert found == [
        f"{conf}:{line_of(conf, 'days')}: windows.courteous.days: "
        "use mon, tue, wed, thu, fri, sat, sun (got ['funday'])",
        f"{conf}:{line_of(conf, 'start')}: windows.courteous.start: "
        "'25:00' is not a time of day: HH:MM, 00:00 to 24:00",
        f"{conf}:{line_of(conf, 'timezone')}: windows.courteous.timezone: "
        "unknown time zone 'Mars/Olympus'",
    ]


def test_an_unknown_trigger_key_does_not_hide_a_bad_step(tmp_path):
    conf = write_conf(
        tmp_path,
        redis_url=NO_REDIS,
        extra="""
        [scenarios.remind]
        key = "payment_request:{{ refs.payment_request_id }}"
        trigger = { events = ["payment_request.created"], evnts = ["typo"] }
        [[scenarios.remind.steps]]
        name = "nudge"
        after = "zero"
        [[scenarios.remind.steps.actions]]
        channel = "hook"
        """,
    )
    found = problems(check(str(conf)))
    assert found == [
        f"{conf}:{line_of(conf, 'trigger')}: scenarios.remind.trigger: "
        "Object contains unknown field `evnts`",
        f"{conf}:{line_of(conf, 'after')}: scenarios.remind.steps[0].after: "
        "'zero' is not a duration (try '30s', '5m', '2h', '7d', '1h30m')",
    ]


def test_an_unset_variable_is_reported_once(tmp_path):
    conf = write_conf(tmp_path, redis_url=NO_REDIS)
    text = conf.read_text()
    conf.write_text(text.replace('secret = "whsec_', 'secret = "${TOCSIN_TEST_UNSET_SECRET}"\n#'))
    found = problems(check(str(conf)))
    assert found == [
        f"{conf}:{line_of(conf, 'secret =')}: channels.hook.secret: "
        "environment variable TOCSIN_TEST_UNSET_SECRET is not set"
    ]


def test_a_samples_folder_named_on_the_command_line_must_exist(tmp_path):
    conf = write_conf(tmp_path, redis_url=NO_REDIS)
    result = check(str(conf), "--samples", str(tmp_path / "nope"))
    assert result.exit_code == 2
    assert problems(result) == [f"--samples: no folder {tmp_path / 'nope'}"]
    # Not named: no samples is a note, not an error.
    assert check(str(conf)).exit_code == 0


def test_a_samples_folder_named_in_conf_must_exist(tmp_path):
    conf = write_conf(tmp_path, redis_url=NO_REDIS)
    conf.write_text(
        conf.read_text().replace('data_dir = "var"', 'data_dir = "var"\nsamples = "ex"')
    )
    result = check(str(conf))
    assert result.exit_code == 2
    assert problems(result) == [
        f"{conf}:{line_of(conf, 'samples')}: gateway.samples: no folder {tmp_path / 'ex'}"
    ]


# -- where keys are written ----------------------------------------------------------------


def test_key_lines_follow_tables_arrays_dotted_keys_and_inline_tables():
    text = textwrap.dedent(
        '''
        # a comment with [brackets] and key = "value"
        title = """
        [not.a.table]
        """
        [rules.a]
        events = [
          "payment.*",   # first
          "refund.*",
        ]
        when.all = ["x"]

        [[rules.a.actions]]
        channel = "hook"
        [[rules.a.actions]]
        channel = "sms"
        to = [{ name = "Ann" }, { name = "Bob", "e-mail" = 'b@x' }]

        [scenarios.s]
        trigger = { events = ["a"], when = ['b == "}"'] }
        [[scenarios.s.steps]]
        name = "one"
        [[scenarios.s.steps.actions]]
        channel = "c"
        [[scenarios.s.steps]]
        after = "1d"
        [[scenarios.s.steps.actions]]
        channel = "d"
        [[scenarios.s.steps.actions]]
        channel = "e"
        '''
    )
    lines = key_lines(text)
    assert ("not", "a", "table") not in lines
    assert lines[("title",)] == 3
    assert lines[("rules", "a")] == 6
    assert lines[("rules", "a", "events", 0)] == 8
    assert lines[("rules", "a", "events", 1)] == 9
    assert lines[("rules", "a", "when", "all")] == 11
    assert lines[("rules", "a", "actions", 0)] == 13
    assert lines[("rules", "a", "actions", 1, "channel")] == 16
    assert lines[("rules", "a", "actions", 1, "to", 1, "e-mail")] == 17
    assert lines[("scenarios", "s", "trigger", "when", 0)] == 20
    assert lines[("scenarios", "s", "steps", 0, "actions", 0, "channel")] == 24
    assert lines[("scenarios", "s", "steps", 1, "after")] == 26
    assert lines[("scenarios", "s", "steps", 1, "actions", 1, "channel")] == 30
