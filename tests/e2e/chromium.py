"""Debian's chromium, headless, driven over the Chrome DevTools Protocol (a websocket, through
aiohttp's client): enough to load a page, read it, type into it, and see every request it
makes and every complaint it logs.

`make test` installs /usr/bin/chromium when it is missing (see the Makefile).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--remote-debugging-port=0",  # chromium picks a free port and writes it down
)
TIMEOUT = 30.0  # for any one thing the browser is asked to do; it is slow on a busy machine


class Page:
    """One tab, through a flat DevTools session on the browser's websocket."""

    def __init__(self, browser: Browser, session_id: str):
        self._browser = browser
        self.session_id = session_id

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self._browser.send(method, params, session_id=self.session_id)

    def events(self, method: str) -> list[dict[str, Any]]:
        """The parameters of every ``method`` event of this page so far."""
        return [
            e["params"] for e in self._browser.events if e.get("sessionId") == self.session_id and e["method"] == method
        ]

    async def goto(self, url: str) -> None:
        """Load ``url`` and wait for its load event."""
        seen = len(self.events("Page.loadEventFired"))
        answer = await self.send("Page.navigate", {"url": url})
        assert "errorText" not in answer, answer
        await self._browser.until(lambda: len(self.events("Page.loadEventFired")) > seen)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (DevTools runs it whatever the
        page's CSP says: it is the test reading the page, not the page running a script)."""
        answer = await self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        assert "exceptionDetails" not in answer, answer["exceptionDetails"]
        return answer["result"].get("value")

    async def type_and_submit(self, selector: str, text: str) -> None:
        """Type ``text`` into the field ``selector`` as a user would, press Enter, and wait
        for the page that the form leads to."""
        # select(): what is typed replaces what the field held
        focused = f"(e => (e.focus(), e.select(), e === document.activeElement))(document.querySelector({selector!r}))"
        assert await self.evaluate(focused), selector
        await self.send("Input.insertText", {"text": text})
        seen = len(self.events("Page.loadEventFired"))
        for kind in ("keyDown", "keyUp"):
            await self.send(
                "Input.dispatchKeyEvent",
                {"type": kind, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "text": "\r"},
            )
        await self._browser.until(lambda: len(self.events("Page.loadEventFired")) > seen)

    def problems(self) -> list[str]:
        """Everything the page complained about: console errors and warnings, exceptions,
        CSP violations and other issues DevTools reports."""
        found = [
            f"log {e['entry']['level']}: {e['entry'].get('text')} ({e['entry'].get('url', '')})"
            for e in self.events("Log.entryAdded")
            if e["entry"]["level"] in ("error", "warning")
        ]
        found += [
            f"console {e['type']}: {e.get('args')}"
            for e in self.events("Runtime.consoleAPICalled")
            if e["type"] in ("error", "warning", "assert")
        ]
        found += [f"exception: {e['exceptionDetails']}" for e in self.events("Runtime.exceptionThrown")]
        found += [f"issue {e['issue']['code']}: {e['issue']}" for e in self.events("Audits.issueAdded")]
        return found

    def requested_urls(self) -> list[str]:
        return [e["request"]["url"] for e in self.events("Network.requestWillBeSent")]


class Browser:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self._ws = ws
        self._ids = itertools.count(1)
        self._answers: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self._news = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self._ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            data = message.json()
            if "id" in data:
                future = self._answers.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
            else:
                self.events.append(data)
                self._news.set()
        for future in self._answers.values():
            if not future.done():
                future.set_exception(ConnectionError("chromium closed the DevTools connection"))

    async def send(self, method: str, params: dict[str, Any] | None = None, *, session_id: str | None = None) -> Any:
        call_id = next(self._ids)
        message: dict[str, Any] = {"id": call_id, "method": method, "params": params or {}}
        if session_id is not None:
            message["sessionId"] = session_id
        future = asyncio.get_running_loop().create_future()
        self._answers[call_id] = future
        await self._ws.send_json(message)
        async with asyncio.timeout(TIMEOUT):
            answer = await future
        assert "error" not in answer, (method, answer["error"])
        return answer["result"]

    async def until(self, condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        """Wait for ``condition`` to hold, re-checked at each event from the browser."""
        async with asyncio.timeout(timeout):
            while not condition():
                self._news.clear()
                await self._news.wait()

    async def new_page(self) -> Page:
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        page = Page(self, attached["sessionId"])
        for domain in ("Page", "Network", "Runtime", "Log", "Audits"):
            await page.send(f"{domain}.enable")
        return page

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


async def _devtools_address(user_data: Path, process: asyncio.subprocess.Process) -> str:
    """Chromium writes the port it bound, and its browser endpoint, to DevToolsActivePort."""
    marker = user_data / "DevToolsActivePort"
    async with asyncio.timeout(TIMEOUT):
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"chromium exited with {process.returncode} before it listened")
            lines = marker.read_text().split("\n") if marker.exists() else []
            if len(lines) >= 2 and lines[0].strip().isdigit() and lines[1].startswith("/"):
                return f"ws://127.0.0.1:{lines[0].strip()}{lines[1].strip()}"
            await asyncio.sleep(0.05)  # a file has no event to wait on; polled with a deadline


def _die_with_this_process() -> None:
    """In chromium, before it runs: if the test process is killed outright (a timeout, a
    second ^C) and cannot end it, the kernel does (PR_SET_PDEATHSIG), and its children go
    with it."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_PR_SET_PDEATHSIG = 1


def _living(pgid: int, home: Path) -> list[int]:
    """Chromium's processes that are not dead yet (a zombie, waiting to be reaped, is): those
    of its process group, and its crash handlers, which double-fork into a session of their
    own but name their database, in chromium's ``home``, on their command line."""
    mark = f"{home}/".encode()
    living = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            state, _, group = (proc / "stat").read_text().rsplit(")", 1)[1].split()[:3]
            ours = int(group) == pgid or mark in (proc / "cmdline").read_bytes()
        except OSError:
            continue  # it ended while we looked
        if ours and state != "Z":
            living.append(int(proc.name))
    return living


async def _kill(process: asyncio.subprocess.Process, home: Path) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    async with asyncio.timeout(TIMEOUT):
        await process.wait()
        while living := _living(process.pid, home):
            for pid in living:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(0.05)  # they are not our children to wait for; polled with a deadline


@contextlib.asynccontextmanager
async def chromium(workdir: Path) -> AsyncIterator[Browser]:
    """A headless chromium with a fresh profile in ``workdir``, killed with every process it
    started when the block ends, however it ends."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)")
    user_data = workdir / "chromium-profile"
    user_data.mkdir(parents=True)
    # Its own home too: chromium keeps its crash reports under $HOME/.config, not in the profile.
    home = workdir / "chromium-home"
    home.mkdir()
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
    }
    with (workdir / "chromium.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            str(CHROMIUM),
            *FLAGS,
            f"--user-data-dir={user_data}",
            "about:blank",
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # its own process group, so that one signal ends all of it
            preexec_fn=_die_with_this_process,
        )
    try:
        address = await _devtools_address(user_data, process)
        async with aiohttp.ClientSession() as session, session.ws_connect(address, max_msg_size=64 << 20) as ws:
            browser = Browser(ws)
            try:
                yield browser
            finally:
                await browser.close()
    finally:
        await _kill(process, home)
