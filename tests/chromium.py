"""Debian's headless Chromium driven by Playwright (never a downloaded browser), for the tests
of the rep's page and the manager view: a browser fixture, pages that fail a test on any
request to another host or any script error, the WCAG contrast check, and screenshots kept in
the test's output (and in ``$TEST_SCREENSHOT_DIR`` when set)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, Page, ViewportSize, async_playwright, expect

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 90_000  # an upper bound for a loaded machine; a test passes as soon as the page is done
WIDE = ViewportSize(width=1280, height=800)
NARROW = ViewportSize(width=400, height=800)
expect.set_options(timeout=WAIT_MS)  # expect() waits on its own clock, 5 s by default


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "chromium is not installed: apt-get install -y chromium (make test does it)"
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


@dataclass
class Watched:
    """A page and what it did that no page of ours may do."""

    page: Page
    foreign: list[str] = field(default_factory=list)  # requests to another host
    errors: list[str] = field(default_factory=list)  # uncaught script errors

    def assert_clean(self) -> None:
        assert not self.foreign, f"requests to other hosts: {self.foreign}"
        assert not self.errors, f"script errors: {self.errors}"


async def open_page(browser: Browser, url: str, viewport: ViewportSize | None = None) -> Watched:
    page = await browser.new_page(viewport=viewport or WIDE)
    page.set_default_timeout(WAIT_MS)
    watched = Watched(page)
    host = urlsplit(url).netloc
    page.on(
        "request",
        lambda r: None if urlsplit(r.url).netloc == host else watched.foreign.append(r.url),
    )
    page.on("pageerror", lambda e: watched.errors.append(str(e)))
    await page.goto(url)
    return watched


async def screenshot(page: Page, out: Path, name: str) -> Path:
    """A PNG of the page in the test's output, copied to $TEST_SCREENSHOT_DIR if set."""
    path = out / name
    await page.screenshot(path=str(path))
    _keep(path)
    return path


def _keep(path: Path) -> None:
    extra = os.environ.get("TEST_SCREENSHOT_DIR")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / path.name)


# Every visible element with text of its own: its colour against the first opaque background
# behind it, as WCAG 2 computes contrast; large text (24 px, or 18.66 px bold) needs 3:1.
_LOW_CONTRAST_JS = """() => {
  const channel = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  const lum = ([r, g, b]) => 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
  const parse = (s) => {
    const m = /rgba?\\(([^)]+)\\)/.exec(s);
    if (!m) return null;
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return {rgb: p.slice(0, 3), a: p.length > 3 ? p[3] : 1};
  };
  const behind = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c.a > 0.5) return c.rgb;
    }
    return [255, 255, 255];
  };
  const low = [];
  for (const el of document.querySelectorAll("body *")) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || el.getClientRects().length === 0) continue;
    const st = getComputedStyle(el);
    if (st.visibility === "hidden" || Number(st.opacity) < 1) continue;
    const a = lum(parse(st.color).rgb), b = lum(behind(el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(st.fontSize), bold = Number(st.fontWeight) >= 700;
    const need = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    if (ratio < need) low.push(`${el.tagName}.${el.className} "${el.textContent.trim().slice(0, 30)}" ${ratio.toFixed(2)}`);
  }
  return low;
}"""


async def low_contrast(page: Page) -> list[str]:
    """Text on the page below WCAG AA contrast (empty when all of it passes)."""
    found: list[str] = await page.evaluate(_LOW_CONTRAST_JS)
    return found
