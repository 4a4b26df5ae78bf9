"""``tocsin render`` prints what channels would send; ``tocsin check`` renders the samples.

Confs use the built-in json_hook channel, plus a tiny ``console`` channel type from a
plugin module named in ``[plugins] modules`` (the way a third-party channel with a
``preview`` is loaded), so these tests do not depend on the email and SMS plugins.
"""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gateway.cli import main

from .conftest import make_event, write_conf

UNUSED_REDIS = "redis://127.0.0.1:1/0"
NNBSP = "\u202f"
NBSP = "\u00a0"

CONSOLE_PLUGIN = """
    from collections.abc import Sequence
    from typing import Any

    import msgspec

    from gateway import Action, Channel, Delivery, hookimpl, template_context


    class ConsoleConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
        prefix: str = ""


    class Console(Channel[ConsoleConfig]):
        '''Prints a text part; what it would print is its preview.'''

        type_name = "console"
        config_type = ConsoleConfig
        needs_template = True

        def check_action(self, action: Action) -> list[str]:
            if action.template and not self.context.templates.has_part(action.template, "txt"):
                return [f"template: {action.template!r} has no txt.j2"]
            return []

        def preview(self, delivery: Delivery) -> dict[str, str]:
            assert delivery.template is not None
            event = delivery.decode_event()
            text = self.context.templates.render(
                delivery.template, "txt", delivery.locale, template_context(delivery, event)
            )
            to = delivery.recipient.email if delivery.recipient else None
            return {"to": str(to), "text": self.config.prefix + text}

        async def send(self, delivery: Delivery) -> None:
            print(self.preview(delivery)["text"])


    class Mute(Channel[ConsoleConfig]):
        '''A channel type without a preview.'''

        type_name = "mute"
        config_type = ConsoleConfig

        async def send(self, delivery: Delivery) -> None:
            pass


    @hookimpl
    def tocsin_register_channels() -> Sequence[type[Channel[Any]]]:
        return [Console, Mute]
"""

RECEIPT_JSON = """\
{# the amount, formatted for the customer #}
{"event": {{ id | json }}, "paid": {{ (data.amount | money(data.currency)) | json }}}
"""
RECEIPT_FR = (
    "Bonjour {{ customer.name }}, nous avons reçu {{ data.amount | money(data.currency) }}.\n"
)
RECEIPT_EN = "Hello {{ customer.name }}, we received {{ data.amount | money(data.currency) }}.\n"


@pytest.fixture
def console_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    folder = tmp_path / "modules"
    folder.mkdir()
    (folder / "acme_console.py").write_text(textwrap.dedent(CONSOLE_PLUGIN))
    monkeypatch.syspath_prepend(str(folder))
    importlib.invalidate_caches()
    yield "acme_console"
    sys.modules.pop("acme_console", None)


def line_of(conf: Path, written: str) -> int:
    """The number of the first line of ``conf`` that starts with ``written``."""
    lines = conf.read_text().splitlines()
    return next(i for i, text in enumerate(lines, 1) if text.strip().startswith(written))


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def conf_with(
    directory: Path,
    templates: dict[str, str],
    *,
    rules: str | None = None,
    console: bool = True,
    extra: str = "",
) -> Path:
    channels = ""
    plugins = ""
    if console:
        plugins = '\n[plugins]\nmodules = ["acme_console"]\n'
        channels = """
        [channels.console]
        type = "console"
        prefix = "> "
        [channels.quiet]
        type = "mute"
        """
    if rules is None:
        rules = """
        [rules.receipts]
        events = ["payment.succeeded"]
        [[rules.receipts.actions]]
        channel = "hook"
        template = "receipt"
        """
    return write_conf(
        directory,
        redis_url=UNUSED_REDIS,
        hook_url="http://127.0.0.1:9/hook",
        templates=templates,
        rules=rules,
        extra=textwrap.dedent(channels) + plugins + textwrap.dedent(extra),
    )


def event_file(directory: Path, name: str = "event.json", **overrides: object) -> Path:
    event = make_event(
        id="evt_render_1",
        occurred_at="2026-11-25T10:15:00Z",
        customer={
            "id": "cus_1",
            "name": "Atelier Dupont",
            "email": "compta@example.fr",
            "locale": "fr-FR",
        },
        data={"amount": 123450, "currency": "EUR"},
    )
    event.update(overrides)
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(event))
    return path


# -- tocsin render -------------------------------------------------------------------------


def test_render_prints_what_json_hook_would_send(tmp_path):
    conf = conf_with(tmp_path, {"receipt/json.j2": RECEIPT_JSON}, console=False)
    result = cli("render", "receipt", "--event", str(event_file(tmp_path)), str(conf))
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "=== hook (json_hook): template receipt, locale fr-FR ===\n"
        "--- url ---\n"
        "http://127.0.0.1:9/hook\n"
        "--- json ---\n"
        "\n"
        '{"event": "evt_render_1", "paid": "1' + NNBSP + "234,50" + NBSP + '€"}\n'
    )
    assert result.stderr == ""


def test_render_previews_every_channel_that_can_use_the_template(tmp_path, console_plugin):
    templates = {
        "receipt/json.j2": RECEIPT_JSON,
        "receipt/fr/txt.j2": RECEIPT_FR,
        "receipt/en/txt.j2": RECEIPT_EN,
    }
    conf = conf_with(tmp_path, templates)
    result = cli("render", "receipt", "--event", str(event_file(tmp_path)), str(conf))
    assert result.exit_code == 0, result.output
    out = result.stdout
    # json_hook and console render; mute has no preview and is left out.
    assert "=== hook (json_hook): template receipt, locale fr-FR ===" in out
    assert "=== console (console): template receipt, locale fr-FR ===" in out
    assert "quiet" not in out
    assert (
        "--- to ---\ncompta@example.fr\n--- text ---\n"
        f"> Bonjour Atelier Dupont, nous avons reçu 1{NNBSP}234,50{NBSP}€.\n"
    ) in out


def test_render_one_channel_in_another_locale(tmp_path, console_plugin):
    templates = {"receipt/fr/txt.j2": RECEIPT_FR, "receipt/en/txt.j2": RECEIPT_EN}
    conf = conf_with(tmp_path, templates, rules="")
    args = ["render", "receipt", "--event", str(event_file(tmp_path)), str(conf)]
    result = cli(*args, "--channel", "console", "--locale", "en")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "=== console (console): template receipt, locale en ===\n"
        "--- to ---\ncompta@example.fr\n"
        "--- text ---\n> Hello Atelier Dupont, we received €1,234.50.\n"
    )


def test_render_without_a_customer_locale_uses_the_default(tmp_path, console_plugin):
    templates = {"receipt/fr/txt.j2": RECEIPT_FR, "receipt/en/txt.j2": RECEIPT_EN}
    conf = conf_with(tmp_path, templates, rules="")
    event = event_file(tmp_path, customer={"name": "Léa"})
    result = cli("render", "receipt", "--event", str(event), "--channel", "console", str(conf))
    assert result.exit_code == 0, result.output
    assert "locale fr (default)" in result.stdout
    assert f"> Bonjour Léa, nous avons reçu 1{NNBSP}234,50{NBSP}€." in result.stdout


def test_render_a_failing_template_names_file_and_line(tmp_path, console_plugin):
    broken = "Bonjour {{ customer.name }},\néchéance {{ data.due_date | date }}.\n"
    conf = conf_with(tmp_path, {"receipt/fr/txt.j2": broken}, rules="")
    result = cli("render", "receipt", "--event", str(event_file(tmp_path)), str(conf))
    assert result.exit_code == 1
    assert result.stderr == (
        f"console (console): {tmp_path}/templates/receipt/fr/txt.j2: line 2: "
        "'dict object' has no attribute 'due_date'\n"
    )
    assert "Traceback" not in result.output


def test_render_a_filter_error_names_file_and_line(tmp_path, console_plugin):
    conf = conf_with(tmp_path, {"receipt/txt.j2": "{{ data.amount | money('EURO') }}"}, rules="")
    event = event_file(tmp_path)
    result = cli("render", "receipt", "--event", str(event), "--channel", "console", str(conf))
    assert result.exit_code == 1
    assert result.stderr == (
        f"console (console): {tmp_path}/templates/receipt/txt.j2: line 1: "
        "ValueError: money: currency must be an ISO 4217 code ('EUR'), got 'EURO'\n"
    )


def test_render_an_invalid_event_names_the_field(tmp_path):
    conf = conf_with(tmp_path, {"receipt/json.j2": RECEIPT_JSON}, console=False)
    event = event_file(tmp_path, data={"amount": 12.5, "currency": "EUR"})
    result = cli("render", "receipt", "--event", str(event), str(conf))
    assert result.exit_code == 1
    assert result.stderr == (
        f"{event}: $.data.amount: amounts are integers in minor units (1250 = 12.50)\n"
    )
    missing = cli("render", "receipt", "--event", str(tmp_path / "nope.json"), str(conf))
    assert missing.exit_code == 1
    assert missing.stderr == f"{tmp_path / 'nope.json'}: cannot read: No such file or directory\n"
    (tmp_path / "bad.json").write_text("{not json")
    bad = cli("render", "receipt", "--event", str(tmp_path / "bad.json"), str(conf))
    assert bad.exit_code == 1
    assert bad.stderr.startswith(f"{tmp_path / 'bad.json'}: $: malformed JSON")


def test_render_unknown_channel_template_or_unusable_channel(tmp_path, console_plugin):
    conf = conf_with(tmp_path, {"receipt/json.j2": RECEIPT_JSON}, rules="")
    event = str(event_file(tmp_path))
    unknown = cli("render", "receipt", "--event", event, "--channel", "sms", str(conf))
    assert unknown.exit_code == 1
    assert unknown.stderr == "no channel 'sms' (channels: console, hook, quiet)\n"

    no_preview = cli("render", "receipt", "--event", event, "--channel", "quiet", str(conf))
    assert no_preview.exit_code == 1
    assert no_preview.stderr == "channel 'quiet' (mute) has no preview\n"

    unusable = cli("render", "receipt", "--event", event, "--channel", "console", str(conf))
    assert unusable.exit_code == 1
    assert unusable.stderr == (
        "channel 'console' cannot use template 'receipt': template: 'receipt' has no txt.j2\n"
    )

    no_template = cli("render", "receipts", "--event", event, str(conf))
    assert no_template.exit_code == 1
    assert (
        no_template.stderr == f"no template 'receipts': no folder {tmp_path}/templates/receipts\n"
    )
    for result in (unknown, no_preview, unusable, no_template):
        assert "Traceback" not in result.output


def test_render_when_no_channel_can_use_the_template(tmp_path, console_plugin):
    conf = conf_with(tmp_path, {"receipt/sms.j2": "x"}, rules="")
    result = cli("render", "receipt", "--event", str(event_file(tmp_path)), str(conf))
    assert result.exit_code == 1
    assert result.stderr == (
        "no channel can render template 'receipt':\n"
        "  hook (json_hook): template: 'receipt' has no json.j2\n"
        "  console (console): template: 'receipt' has no txt.j2\n"
        "  quiet (mute): no preview\n"
    )


def test_render_refuses_an_invalid_conf_like_check(tmp_path):
    conf = conf_with(tmp_path, {"receipt/json.j2": RECEIPT_JSON}, console=False)
    conf.write_text(conf.read_text().replace('type = "json_hook"', 'type = "json_hooks"'))
    result = cli("render", "receipt", "--event", str(event_file(tmp_path)), str(conf))
    assert result.exit_code == 2
    assert "unknown channel type 'json_hooks'" in result.stderr


# -- tocsin check: sample events -----------------------------------------------------------


def test_check_renders_templates_against_the_sample_events(tmp_path, console_plugin):
    templates = {"receipt/fr/txt.j2": RECEIPT_FR, "receipt/en/txt.j2": RECEIPT_EN}
    rules = """
    [rules.receipts]
    events = ["payment.succeeded"]
    [[rules.receipts.actions]]
    channel = "console"
    template = "receipt"
    to = ["customer"]
    """
    conf = conf_with(tmp_path, templates, rules=rules)
    event_file(tmp_path / "examples", "paid.json")
    event_file(tmp_path / "examples", "failed.json", type="payment.failed")
    result = cli("check", str(conf))
    assert result.exit_code == 0, result.output
    # One sample reaches the rule; it renders in fr-FR (its own) and in en and fr.
    assert f"{tmp_path}/examples: 2 sample event(s), 3 template render(s)\n" in result.stdout


def test_check_reports_a_template_failing_on_a_sample_with_file_and_line(tmp_path, console_plugin):
    broken = (
        "Dear {{ customer.name }},\n\nyour card {{ data.card.last4 | card_mask }} was charged.\n"
    )
    templates = {"receipt/fr/txt.j2": RECEIPT_FR, "receipt/en/txt.j2": broken}
    rules = """
    [rules.receipts]
    events = ["payment.*"]
    [[rules.receipts.actions]]
    channel = "console"
    template = "receipt"
    to = ["customer"]

    [rules.elsewhere]
    events = ["refund.created"]
    [[rules.elsewhere.actions]]
    channel = "nowhere"
    """
    conf = conf_with(tmp_path, templates, rules=rules)
    event_file(tmp_path / "examples", "paid.json")
    event_file(tmp_path / "examples", "bad.json", data={"amount": "12", "currency": "EUR"})
    result = cli("check", str(conf))
    assert result.exit_code == 2
    problems = result.stderr.splitlines()
    nowhere = line_of(conf, 'channel = "nowhere"')
    # Every problem of the run: the conf's own, the invalid sample, the failing render.
    assert problems == [
        f"{conf}:{nowhere}: rules.elsewhere.actions[0].channel: no channel 'nowhere' "
        "(channels: console, hook, quiet)",
        f"{tmp_path}/examples/bad.json: $.data.amount: amounts are integers in minor units "
        "(1250 = 12.50)",
        f"{tmp_path}/templates/receipt/en/txt.j2: line 3: 'dict object' has no attribute 'card' "
        "(sample examples/paid.json, rules.receipts, channel console, locale en)",
        f"3 problem(s) in {conf}",
    ]
    assert "Traceback" not in result.output


def test_check_reports_a_filter_error_and_a_channel_refusal_on_samples(tmp_path, console_plugin):
    rules = """
    [rules.receipts]
    events = ["payment.succeeded"]
    [[rules.receipts.actions]]
    channel = "hook"
    template = "receipt"
    [[rules.receipts.actions]]
    channel = "console"
    template = "receipt"
    """
    templates = {
        # Not JSON once rendered: json_hook refuses it (no template line to give).
        "receipt/json.j2": "{{ data.amount }} cents\n",
        "receipt/txt.j2": "Total:\n{{ data.amount | money(data.currency) }}\n",
    }
    conf = conf_with(tmp_path, templates, rules=rules)
    event_file(tmp_path / "samples", "jpy.json", data={"amount": 1235.0, "currency": "JPY"})
    # Floats are refused by the event decoder already; a sample in a currency that is not
    # one reaches the template, whose filter refuses it.
    event_file(tmp_path / "samples", "xau.json", data={"amount": 100, "currency": "XAU"})
    result = cli("check", str(conf), "--samples", str(tmp_path / "samples"))
    assert result.exit_code == 2
    problems = result.stderr.splitlines()
    assert problems[0] == (
        f"{tmp_path}/samples/jpy.json: $.data.amount: amounts are integers in minor units "
        "(1250 = 12.50)"
    )
    assert problems[1].startswith(
        f"{tmp_path}/samples/xau.json: template receipt/json.j2 did not render valid JSON:"
    )
    assert problems[1].endswith(
        "(sample samples/xau.json, rules.receipts, channel hook, locale fr-FR)"
    )
    assert problems[2] == (
        f"{tmp_path}/templates/receipt/txt.j2: line 2: ValueError: money: 'XAU' is not a "
        "currency with minor units (sample samples/xau.json, rules.receipts, channel console, "
        "locale fr-FR)"
    )
    assert problems[3] == f"3 problem(s) in {conf}"


def test_check_renders_parts_for_channels_without_preview(tmp_path, console_plugin):
    rules = """
    [rules.quietly]
    events = ["payment.succeeded"]
    [[rules.quietly.actions]]
    channel = "quiet"
    template = "notice"
    """
    conf = conf_with(tmp_path, {"notice/sms.j2": "{{ data.nope }}"}, rules=rules)
    event_file(tmp_path / "examples", "paid.json")
    result = cli("check", str(conf))
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == (
        f"{tmp_path}/templates/notice/sms.j2: line 1: 'dict object' has no attribute 'nope' "
        "(sample examples/paid.json, rules.quietly, channel quiet, locale fr-FR)"
    )


def test_check_reports_a_syntax_error_once_not_per_sample(tmp_path):
    conf = conf_with(tmp_path, {"receipt/json.j2": '{"a": {{ id | json }'}, console=False)
    event_file(tmp_path / "examples", "one.json")
    event_file(tmp_path / "examples", "two.json")
    result = cli("check", str(conf))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"{tmp_path}/templates/receipt/json.j2: line 1: unexpected '}}'",
        f"1 problem(s) in {conf}",
    ]


def test_check_notes_templates_no_sample_reaches(tmp_path, console_plugin):
    conf = conf_with(tmp_path, {"receipt/json.j2": RECEIPT_JSON})
    no_samples = cli("check", str(conf))
    assert no_samples.exit_code == 0, no_samples.output
    assert f"note: no sample events in {tmp_path}/examples: templates were not rendered" in (
        no_samples.stdout
    )
    event_file(tmp_path / "examples", "refund.json", type="refund.created")
    unreached = cli("check", str(conf))
    assert unreached.exit_code == 0, unreached.output
    assert unreached.stdout.splitlines()[1:] == [
        f"{tmp_path}/examples: 1 sample event(s), 0 template render(s)",
        "note: rules.receipts.actions[0]: template 'receipt' not rendered: "
        "no sample event reaches it",
    ]


def test_check_accepts_a_json_array_of_samples(tmp_path):
    conf = conf_with(tmp_path, {"receipt/json.j2": RECEIPT_JSON}, console=False)
    first = make_event(id="evt_a", occurred_at="2026-11-25T10:15:00Z")
    second = make_event(id="evt_b", occurred_at="2026-11-25T10:15:00Z", data={"amount": 1.5})
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "batch.json").write_text(json.dumps([first, second]))
    result = cli("check", str(conf))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"{tmp_path}/examples/batch.json[1]: $.data.amount: amounts are integers in minor "
        "units (1250 = 12.50)",
        f"1 problem(s) in {conf}",
    ]


def test_shipped_conf_renders_its_sample():
    root = Path(__file__).resolve().parent.parent
    result = cli("check", str(root / "conf" / "tocsin.toml"))
    assert result.exit_code == 0, result.output
    samples = len(list((root / "conf" / "examples").glob("*.json")))
    assert f"{root}/conf/examples: {samples} sample event(s), " in result.stdout
    assert "note:" not in result.stdout  # every template is rendered by some sample


def test_render_shipped_template_with_the_shipped_event(monkeypatch):
    root = Path(__file__).resolve().parent.parent
    monkeypatch.chdir(root)
    event = "conf/examples/payment_succeeded.json"
    result = cli(
        "render",
        "large_payment",
        "--event",
        event,
        "--channel",
        "merchant_webhook",
        "conf/tocsin.toml",
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(
        "=== merchant_webhook (json_hook): template large_payment, locale fr-FR ===\n"
    )
    body = result.stdout.split("--- json ---\n", 1)[1]
    assert json.loads(body)["amount_minor"] == 125000


# -- [brand] -------------------------------------------------------------------------------

BRAND = """
[brand]
name = "Dupont"
legal = "SARL Dupont"
[brand.fr]
legal = "SARL Dupont au capital de 1 000 €"
"""


def test_every_template_sees_the_brand_in_the_language_it_renders(tmp_path):
    template = '{"from": {{ brand.name | tojson }}, "legal": {{ brand.legal | tojson }}}'
    conf = conf_with(tmp_path, {"receipt/json.j2": template}, console=False, extra=BRAND)
    for locale, legal in (("fr-FR", "SARL Dupont au capital de 1 000 €"), ("en", "SARL Dupont")):
        result = cli(
            "render", "receipt", "--event", str(event_file(tmp_path)), "--locale", locale, str(conf)
        )
        assert result.exit_code == 0, result.output
        body = json.loads(result.stdout.split("--- json ---\n", 1)[1])
        assert body == {"from": "Dupont", "legal": legal}


def test_check_refuses_a_logo_that_is_not_https_and_other_brand_mistakes(tmp_path):
    brand = """
    [brand]
    name = "Dupont"
    logo_url = "http://cdn.example.com/logo.png"
    support_email = "support at example.com"
    slogan = "Le meilleur"
    [brand.en]
    logo_url = "data:image/png;base64,AAAA"
    website = "www.example.com"
    [brand.Paris]
    name = "Dupont Paris"
    """
    conf = conf_with(tmp_path, {"receipt/json.j2": RECEIPT_JSON}, console=False, extra=brand)
    result = cli("check", str(conf))
    assert result.exit_code == 2, result.output
    https = "must be an https:// URL"
    http_line, data_line = line_of(conf, 'logo_url = "http:'), line_of(conf, 'logo_url = "data:')
    assert f"{conf}:{http_line}: brand.logo_url: {https}" in result.stderr
    assert f"{conf}:{data_line}: brand.en.logo_url: {https}" in result.stderr
    assert f"{conf}:{line_of(conf, 'support_email')}: brand.support_email: " in result.stderr
    assert f"{conf}:{line_of(conf, 'slogan')}: brand: Object contains unknown field `slogan`" in (
        result.stderr
    )
    assert f"{conf}:{line_of(conf, 'website')}: brand.en.website: must be an http(s)" in (
        result.stderr
    )
    assert f"{conf}:{line_of(conf, '[brand.Paris]')}: brand.Paris: a sub-table names a locale" in (
        result.stderr
    )
