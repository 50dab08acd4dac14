"""The manager view (``/manager``) in a real headless Chromium against the real server: the
live call is listed with its rep, status, duration, lead score and open alerts; the health
panel shows the server's own figures; the click-through opens the rep's page read-only; after
the call, history search finds it by rep and the card-kind table counts its cards. Plus the
page routes themselves: assets served with their types, nothing else under ``/web/``.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, expect

from clients.callgen import Turn, render
from clients.simulator import SimOptions, simulate
from tests.chromium import browser, low_contrast, open_page, screenshot
from tests.conftest import ServerProcess

__all__ = ["browser"]  # the fixture

SCRIPT = (
    Turn("rep", "Hi Dana, thanks for taking my call today.", rate_wpm=140),
    Turn("customer", "Sure. Honestly, the price is way too high for us."),
    Turn("rep", "I understand, most teams see the cost come back within a quarter.", rate_wpm=140),
    Turn("customer", "We would also have to run it by our legal team first."),
    Turn("rep", "That makes sense. Who else should be part of that conversation?", rate_wpm=140),
)
CALL = "mgr-call"
REP = "mgr-ana"


async def test_page_routes_serve_the_pages_and_nothing_else(server: ServerProcess) -> None:
    """/manager and the pages' scripts and styles are served; other paths under /web are 404."""
    async with httpx.AsyncClient(base_url=server.http) as client:
        page = await client.get("/manager")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<meta name="viewport"' in page.text
        for name, kind in (("rep.js", "text/javascript"), ("style.css", "text/css")):
            res = await client.get(f"/web/{name}")
            assert res.status_code == 200 and res.headers["content-type"].startswith(kind)
            assert res.headers["x-content-type-options"] == "nosniff"
        for bad in (
            "/web/index.html",
            "/web/..%2Fserver%2Fapp.py",
            "/web/.hidden.js",
            "/web/nope.js",
        ):
            assert (await client.get(bad)).status_code == 404, bad
        docs = await client.get("/docs")  # Swagger UI from the package, not a CDN
        assert docs.status_code == 200 and "/openapi.json" in docs.text
        assert not re.findall(r'(?:src|href)="https?://', docs.text), "a third-party host"
        for name, kind in (
            ("swagger-ui-bundle.js", "text/javascript"),
            ("swagger-ui.css", "text/css"),
        ):
            res = await client.get(f"/docs/{name}")
            assert res.status_code == 200 and res.headers["content-type"].startswith(kind)
        assert (await client.get("/docs/index.html")).status_code == 404
        assert (await client.get("/redoc")).status_code == 404  # it would load from a CDN
        for path in ("/", "/manager"):  # no framing (clickjacking), no scripts from elsewhere
            csp = (await client.get(path)).headers["content-security-policy"]
            assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp, path
        rep_page = (await client.get("/")).text
        links = re.findall(r'(?:src|href)="([^"]+)"', rep_page)
        assert {"/web/style.css", "/web/rep.js"} <= set(links)
        assert all(link.startswith(("/web/", "#")) for link in links), links  # this host only


@pytest.mark.model
@pytest.mark.slow
async def test_manager_view_lists_the_live_call(
    server: ServerProcess, browser: Browser, tmp_path: Path
) -> None:
    """The live call shows up with rep, status, duration, score and alerts (and in the rep's
    page's list of live calls); the click-through is the rep's page without Used/Dismiss;
    then the ended call is found by search."""
    path = tmp_path / "call.wav"
    render(SCRIPT).write(path)
    opts = SimOptions(server=server.ws, token=server.token, speed=1.0, call_id=CALL, rep_id=REP)
    watched = await open_page(browser, f"{server.http}/manager#token={server.token}")
    page = watched.page
    stream = asyncio.create_task(simulate(path, opts))
    row = page.locator(f'#calls tr[data-call="{CALL}"]')
    cells = row.locator("td")
    await expect(row).to_have_class(re.compile(r"\blive\b"))
    await expect(cells.nth(1)).to_have_text(REP)
    await expect(cells.nth(2)).to_have_text("live")
    await expect(cells.nth(3)).to_have_text(re.compile(r"^\d+:\d\d$"))
    await expect(cells.nth(4)).to_have_text(re.compile(r"^\d+ "))  # the lead score, its trend
    await expect(cells.nth(5)).to_have_text(re.compile(r"^(none|\d+: .+)$"))
    await expect(page.locator("#health")).to_contain_text(re.compile(r"Live calls\s*[1-9]"))
    await expect(page.locator("#health")).to_contain_text("ASR busy share")
    await screenshot(page, tmp_path, "manager.png")
    assert await low_contrast(page) == []

    picker = await open_page(browser, f"{server.http}/#token={server.token}")  # no call named
    await picker.page.locator(f'#live-calls a:text-is("{CALL}")').click()
    await expect(picker.page.locator("#call-name")).to_have_text(CALL)
    await expect(picker.page.locator("#transcript .line").first).to_be_visible()
    picker.assert_clean()

    href = await row.locator("a").get_attribute("href")
    assert href is not None and "readonly=1" in href
    rep = await open_page(browser, f"{server.http}{href}")
    await expect(rep.page.locator("#cards .card").first).to_be_visible()
    assert await rep.page.locator("#cards button").count() == 0  # read-only: no Used/Dismiss
    await stream

    await expect(cells.nth(2)).to_have_text("ended")
    await page.locator('#search input[name="rep"]').fill(REP)
    await page.locator("#search button").click()
    await expect(page.locator("#history tbody tr")).to_have_count(1)
    await expect(page.locator("#history tbody tr td").first).to_have_text(CALL)
    await expect(page.locator("#kinds-scope")).to_have_text(f"1 stored call of rep {REP}")
    price = page.locator('#kinds tr[data-kind="objection_price"] td')
    await expect(price.nth(1)).to_have_text(re.compile(r"^[1-9]"))
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {server.token}"}) as client:
        outcome = (await client.get(f"{server.http}/v1/calls/{CALL}")).json()["call"]["outcome"]
    for choice in ("advanced", "stalled", "no_decision"):
        await page.locator('#search select[name="outcome"]').select_option(choice)
        await page.locator("#search button").click()
        found = page.locator(f'#history tbody a:text-is("{CALL}")')
        await expect(found).to_have_count(1 if choice == outcome else 0)
    watched.assert_clean()
    rep.assert_clean()
