"""The console in a real browser: Debian's headless Chromium driven by Playwright logs in
with an operate token, finds an event by its customer, retries a waiting delivery now,
and checks every status the page shows against the records in Redis.

Screenshots of each step are kept: in the test's tmp dir, copied to
``var/test-artifacts/console/`` in the repository (ignored by git). Without a browser
(no ``chromium``, or no Playwright) the test is skipped with the reason, except in CI
(``CI=true``), where that is a failure: CI installs the browser (``.ci/run``).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from .console_stack import OPERATE, REPO, Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")

ARTEFACTS = REPO / "var" / "test-artifacts" / "console"
#: Flags for a headless browser with no network of its own and no profile to speak of.
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def browser_path() -> str:
    """Debian's chromium, or a skip (a failure in CI) saying what is missing."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    missing = None
    if found is None:
        missing = "no chromium on PATH (apt-get install chromium; .ci/run does)"
    else:
        try:
            import playwright.async_api  # noqa: F401, PLC0415
        except ImportError:
            missing = "playwright is not installed (pip install -e '.[test]')"
    if missing is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"browser test cannot run in CI: {missing}")
        pytest.skip(f"browser test skipped: {missing}")
    assert found is not None
    return found


@pytest.fixture(scope="module")
def executable() -> str:
    """Checked before the gateway starts: no browser, nothing to start."""
    return browser_path()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path_factory.mktemp("console-browser")) as running:
        yield running


class Shots:
    def __init__(self, page: Any, folder: Path) -> None:
        self.page = page
        self.folder = folder
        self.n = 0

    async def take(self, name: str) -> None:
        self.n += 1
        await self.page.screenshot(
            path=str(self.folder / f"{self.n:02d}-{name}.png"), full_page=True
        )


async def shown_statuses(page: Any) -> dict[str, str]:
    items = await page.locator("article[data-delivery]").all()
    out = {}
    for item in items:
        delivery = await item.get_attribute("data-delivery")
        out[delivery] = (await item.locator("[data-status]").inner_text()).strip()
    return out


async def test_log_in_find_retry_and_check_against_redis(
    executable: str, stack: Stack, tmp_path: Path
):
    from playwright.async_api import async_playwright  # noqa: PLC0415

    customer = f"cus_browser_{time.monotonic_ns()}"
    event_id = f"evt_browser_{time.monotonic_ns()}"
    stack.merchant.failing.add(event_id)
    await stack.post_event(customer={"id": customer}, id=event_id)
    records = await stack.records_of(event_id, merchant_webhook="retrying")
    waiting = next(
        r for r in records if r["channel"] == "merchant_webhook" and r["rule"] == "merchant-sync"
    )
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, args=ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            shots = Shots(page, tmp_path)
            # Not logged in: the console sends the browser to its login form.
            await page.goto(stack.console + "/")
            assert "/console/login" in page.url
            await page.fill("input[name=token]", OPERATE)
            await shots.take("login")
            await page.click("button[type=submit]")
            await page.wait_for_url(re.compile(r".*/console/$"))
            assert (await page.inner_text("#who")).startswith("oncall")
            await shots.take("overview")

            # Find the event by its customer, open its timeline.
            await page.click("nav >> text=Search")
            await page.select_option("#by", "customer")
            await page.fill("#q", customer)
            await page.click("form.search button[type=submit]")
            await page.click(f"#results a:has-text('{event_id}')")
            await page.wait_for_url(re.compile(f".*/console/events/{event_id}$"))
            assert await page.inner_text("#event-id") == event_id
            # The customer's email as a browser draws it, in its sandboxed frame.
            email = page.frame_locator("iframe.email").first.locator("h1")
            assert await email.inner_text() == "Paiement reçu"
            await shots.take("timeline")
            before = await shown_statuses(page)
            for delivery_id, status in before.items():
                record = await stack.record(delivery_id)
                assert record is not None and record["status"] == status, (delivery_id, status)
            assert before[waiting["id"]] == "retrying"

            # Retry the waiting delivery now: a confirmation page, then the action.
            stack.merchant.failing.discard(event_id)
            article = page.locator(f"article[data-delivery='{waiting['id']}']")
            await article.locator("a[data-action=retry]").click()
            assert "Send delivery" in await page.inner_text("#explain")
            await shots.take("confirm")
            await page.click("#confirm")
            assert '"queued": true' in await page.inner_text("#result")
            await shots.take("done")
            await page.click("#back")

            # The page follows Redis: delivered, with the early send in its attempts.
            deadline = time.monotonic() + 10
            while True:
                shown = await shown_statuses(page)
                if shown[waiting["id"]] == "delivered":
                    break
                assert time.monotonic() < deadline, shown
                await asyncio.sleep(0.2)
                await page.reload()
            record = await stack.record(waiting["id"])
            assert record is not None and record["status"] == "delivered"
            assert [a["outcome"] for a in record["attempts"]] == ["retry", "replayed", "delivered"]
            attempts = await article.locator("table.attempts").inner_text()
            assert "replayed" in attempts and "sent now by oncall" in attempts
            for delivery_id, status in shown.items():
                record = await stack.record(delivery_id)
                assert record is not None and record["status"] == status, (delivery_id, status)
            await shots.take("retried")

            await page.click("nav >> text=Audit")
            first = page.locator("#audit tbody tr").first
            assert "delivery.retry_now" in await first.inner_text()
            assert waiting["id"] in await first.inner_text()
            await shots.take("audit")
        finally:
            await browser.close()
            kept = keep(tmp_path)
    assert kept >= 7


def keep(folder: Path) -> int:
    """Copy the screenshots where a person (or CI's artefact upload) finds them."""
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    shots = sorted(folder.glob("*.png"))
    for shot in shots:
        shutil.copy2(shot, ARTEFACTS / shot.name)
    return len(shots)
