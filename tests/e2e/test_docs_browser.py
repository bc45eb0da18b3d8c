"""/docs in a real browser (Debian's headless chromium, over the DevTools protocol): it loads
nothing but itself from the server it came from, breaks none of its CSP, links every
operation, shows the examples, and its search form narrows the page."""

from __future__ import annotations

from pathlib import Path

from entrypoints.http.envelope import DOCS_CSP
from tests.e2e.chromium import Page, chromium
from tests.e2e.conftest import Api

ARTICLES = "[...document.querySelectorAll('main article.op')]"
SIDEBAR_OPERATIONS = "[...document.querySelectorAll('nav.side a[href^=\"#op-\"]')].map(a => a.hash.slice(1))"


async def _shown(page: Page) -> list[str]:
    return await page.evaluate(f"{ARTICLES}.map(a => a.id)")


async def test_docs_page_in_a_headless_browser(api: Api, tmp_path: Path) -> None:
    _, document, _ = await api.call("GET", "/api/v1/openapi.json")
    operations = {
        f"op-{op['operationId']}": f"{method.upper()} {path}"
        for path, ops in document["paths"].items()
        for method, op in ops.items()
    }
    async with chromium(tmp_path) as browser:
        page = await browser.new_page()
        await page.goto(api.base + "/docs")

        # The sidebar links every operation of the document, and each link lands on it.
        assert sorted(await page.evaluate(SIDEBAR_OPERATIONS)) == sorted(operations)
        headings = await page.evaluate(
            f"Object.fromEntries({ARTICLES}.map(a => [a.id, a.querySelector('h3').innerText]))"
        )
        assert headings == operations
        # No link on the page leads to an anchor that is not there.
        broken = await page.evaluate(
            "[...document.querySelectorAll('a[href]')].map(a => new URL(a.href))"
            ".filter(u => u.origin === location.origin && u.pathname === location.pathname && u.hash)"
            ".filter(u => !document.getElementById(decodeURIComponent(u.hash.slice(1)))).map(u => u.hash)"
        )
        assert broken == []
        # Every operation shows a request and a response example, and field tables, not schemas.
        without_examples = await page.evaluate(
            f"{ARTICLES}.filter(a => {{"
            "  const shown = [...a.querySelectorAll('h4 + pre')].map(pre => pre.previousElementSibling.textContent);"
            "  return !shown.some(t => t.startsWith('Request example')) || !shown.includes('Response example');"
            "}).map(a => a.id)"
        )
        assert without_examples == []
        order = await page.evaluate("document.getElementById('op-place_order').innerText")
        assert '"product_id": "prd_' in order and "items[].quantity" in order and "1 to 100 items" in order
        text = await page.evaluate("document.querySelector('main').innerText")
        assert "additionalProperties" not in text and '"$ref"' not in text
        assert await page.evaluate("document.scripts.length") == 0
        # Readable on a laptop and on a phone: the page never scrolls sideways (wide tables
        # and examples scroll within themselves).
        for width, mobile in ((1280, False), (400, True)):
            metrics = {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": mobile}
            await page.send("Emulation.setDeviceMetricsOverride", metrics)
            sizes = await page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
            assert sizes[0] <= sizes[1], (width, sizes)
        await page.send("Emulation.clearDeviceMetricsOverride")

        # Search, as a user does it: type a word into the sidebar's field and press Enter.
        await page.type_and_submit("nav.side input[name=q]", "refund")
        assert await page.evaluate("location.search") == "?q=refund"
        shown = await _shown(page)
        assert {"op-refund_order", "op-list_refunds"} <= set(shown) and len(shown) < len(operations)
        assert await page.evaluate(f"{ARTICLES}.every(a => a.innerText.toLowerCase().includes('refund'))")
        assert await page.evaluate(SIDEBAR_OPERATIONS) == shown
        assert await page.evaluate("document.querySelector('input[name=q]').value") == "refund"
        assert await page.evaluate("document.getElementById('found').innerText") == (
            f"{len(shown)} operations match refund. Show the whole reference."
        )
        # A search with no match says so.
        await page.type_and_submit("nav.side input[name=q]", "xyzzy")
        assert await _shown(page) == []
        assert (await page.evaluate("document.getElementById('found').innerText")).startswith(
            "No operation matches xyzzy."
        )
        # And back to the whole reference through the link it offers.
        seen = len(page.events("Page.loadEventFired"))
        await page.evaluate("document.querySelector('#found a').click()")
        await browser.until(lambda: len(page.events("Page.loadEventFired")) > seen)
        assert sorted(await _shown(page)) == sorted(operations)

        # Nothing came from anywhere but the server; nothing broke the CSP or logged an error.
        requested = page.requested_urls()
        assert requested == [
            api.base + "/docs",
            api.base + "/docs?q=refund",
            api.base + "/docs?q=xyzzy",
            api.base + "/docs",
        ], requested
        assert page.problems() == []
        policies = {
            {name.lower(): value for name, value in r["response"]["headers"].items()}.get("content-security-policy")
            for r in page.events("Network.responseReceived")
        }
        assert policies == {DOCS_CSP}


async def test_the_browser_sees_a_load_from_elsewhere_and_a_broken_csp(api: Api, tmp_path: Path) -> None:
    """The checks above can fail: a page that loads from another origin, or that its CSP
    refuses, is seen."""
    async with chromium(tmp_path) as browser:
        page = await browser.new_page()
        await page.goto(api.base + "/docs")
        assert page.problems() == []
        await page.evaluate("document.body.insertAdjacentHTML('beforeend', '<img src=\"http://127.0.0.1:9/p.gif\">')")
        await browser.until(
            lambda: any("Content Security Policy" in p or "ContentSecurityPolicy" in p for p in page.problems())
        )
        # Without the CSP, the image is requested from the other origin, and that is seen.
        await page.send("Page.setBypassCSP", {"enabled": True})
        await page.goto(api.base + "/docs")
        await page.evaluate("document.body.insertAdjacentHTML('beforeend', '<img src=\"http://127.0.0.1:9/p.gif\">')")
        await browser.until(lambda: "http://127.0.0.1:9/p.gif" in page.requested_urls())
