"""A real headless Chromium (Debian's), driven over its DevTools protocol: load a page,
collect what its console said and every request it made, run a script in it, take a
screenshot. Started and stopped by the test that uses it."""
from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request

import websocket

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One headless Chromium process and a connection to its one page."""

    def __init__(self, width: int = 1300, height: int = 900, timeout: float = 60):
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        self.timeout, self.ws = timeout, None
        # root (CI) needs --no-sandbox; port 0: Chromium picks one and says it on stderr;
        # a session of its own, so that close() ends every process it started
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions",
             "--disable-background-networking", "--disable-component-update",
             "--remote-debugging-port=0", "--remote-allow-origins=*",
             f"--user-data-dir={self.profile}", f"--window-size={width},{height}",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            self._connect(width, height)
        except BaseException:
            self.close()
            raise

    def _connect(self, width: int, height: int) -> None:
        timeout = self.timeout
        port = listening_port(self.proc, r"DevTools listening on ws://[^:]+:(\d+)/", timeout)
        deadline = time.monotonic() + timeout
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                pages = [t for t in json.load(r) if t.get("type") == "page"]
            if pages or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"],
                                              timeout=timeout)
        self.next_id, self.events = 0, []
        for domain in ("Runtime", "Log", "Page", "Network"):
            self.call(f"{domain}.enable")

    def call(self, method: str, **params) -> dict:
        """Send one command and return its result; events that come meanwhile are kept."""
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str) -> dict:
        """The first kept or coming event ``method``."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            for event in self.events:
                if event.get("method") == method:
                    return event
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(method)

    def open(self, url: str) -> None:
        """Load ``url`` and wait until it is loaded (its load event, and the document at
        that address complete: not a late event of the blank page before it)."""
        self.events = [e for e in self.events if e.get("method") != "Page.loadEventFired"]
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")
        deadline = time.monotonic() + self.timeout
        while self.evaluate("document.readyState + ' ' + location.href") != f"complete {url}":
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not load")
            time.sleep(0.05)

    def evaluate(self, script: str):
        """The value of ``script`` (a promise is awaited); an exception in it raises."""
        result = self.call("Runtime.evaluate", expression=script, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{script!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def errors(self) -> list[str]:
        """What the page reported as an error: uncaught exceptions, console.error, and
        the browser's own error log entries (a resource that failed to load)."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(str(params["exceptionDetails"]))
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                found.append(str(params.get("args")))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                found.append(str(params["entry"]))
        return found

    def requests(self) -> list[str]:
        """The URL of every request the page made."""
        return [e["params"]["request"]["url"] for e in self.events
                if e.get("method") == "Network.requestWillBeSent"]

    def screenshot(self, full_page: bool = True) -> bytes:
        """A PNG of the page (all of it with ``full_page``)."""
        params = {"format": "png", "captureBeyondViewport": full_page}
        return base64.b64decode(self.call("Page.captureScreenshot", **params)["data"])

    def close(self) -> None:
        try:
            if self.ws is not None:
                self.ws.close()
        finally:
            end_session(self.proc)
            shutil.rmtree(self.profile, ignore_errors=True)


def listening_port(proc: subprocess.Popen, pattern: str, timeout: float) -> int:
    """The port in the first line of ``proc``'s stderr that matches ``pattern`` (its one
    group), waiting at most ``timeout`` seconds; the rest of the output is read and
    dropped on a thread of its own, so that a full pipe never blocks the process."""
    lines: queue.Queue = queue.Queue()

    def pump():
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)
    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError(f"{proc.args[0]} said nothing like {pattern!r} in "
                               f"{timeout:.0f} s") from None
        if line is None:
            raise RuntimeError(f"{proc.args[0]} ended (status {proc.wait()}) before "
                               "listening")
        found = re.search(pattern, line)
        if found:
            return int(found.group(1))


def end_session(proc: subprocess.Popen) -> None:
    """Kill ``proc`` and every process of its session (started with start_new_session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def available() -> bool:
    return CHROMIUM is not None and os.access(CHROMIUM, os.X_OK)
