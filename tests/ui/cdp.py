"""A tiny headless-Chromium driver over the DevTools protocol (no downloads, no Node).

It starts the system browser with ``--remote-debugging-port=0``, reads the port the
browser picked from ``DevToolsActivePort`` in its profile folder, and speaks CDP over
one WebSocket (``websockets``' sync client) with flattened page sessions.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--disable-default-apps",
    "--mute-audio",
    "--window-size=1360,860",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """The browser to drive: ``$CHROMIUM`` if set, else the first one on ``PATH``."""
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class CDPError(RuntimeError):
    pass


class Browser:
    """One headless browser process and its DevTools connection."""

    def __init__(self, executable: str, log_path: Path) -> None:
        self.executable = executable
        self.log_path = log_path
        self.profile = tempfile.mkdtemp(prefix="agentfield-chromium-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.ws: ClientConnection | None = None
        self._stack = contextlib.ExitStack()
        self._next_id = 0
        self.pages: dict[str, Page] = {}

    def start(self, timeout: float = 60.0) -> Browser:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [self.executable, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its helper processes share our group: one killpg ends all
            )
        marker = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise CDPError(f"chromium exited with {self.proc.returncode}: {tail}")
            lines = marker.read_text().split("\n") if marker.exists() else []
            if len(lines) >= 2 and lines[0].strip() and lines[1].strip():
                url = f"ws://127.0.0.1:{lines[0].strip()}{lines[1].strip()}"
                self.ws = self._stack.enter_context(
                    connect(url, max_size=None, open_timeout=timeout)
                )
                return self
            time.sleep(0.05)
        self.close()
        raise CDPError(f"chromium did not open its DevTools port in {timeout}s")

    def close(self) -> None:
        self._stack.close()
        self.ws = None
        if self.proc is not None:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait()
            self.proc = None
        shutil.rmtree(self.profile, ignore_errors=True)

    # ---------------------------------------------------------------- protocol
    def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> int:
        assert self.ws is not None, "browser not started"
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        return self._next_id

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """Send a command and wait for its answer, dispatching events that arrive meanwhile."""
        assert self.ws is not None, "browser not started"
        wanted = self.send(method, params, session)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CDPError(f"no answer to {method} in {timeout}s")
            try:
                raw = self.ws.recv(timeout=left)
            except TimeoutError:
                continue
            message = json.loads(raw)
            if message.get("id") == wanted:
                if "error" in message:
                    raise CDPError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            if "method" in message:
                self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        page = self.pages.get(message.get("sessionId", ""))
        if page is None:
            return
        method, params = message["method"], message.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            page.errors.append(
                details.get("exception", {}).get("description") or details.get("text", "?")
            )
        elif method == "Runtime.consoleAPICalled":
            args = " ".join(
                str(a.get("value", a.get("description", ""))) for a in params.get("args", [])
            )
            page.console.append(f"{params.get('type')}: {args}")
        elif method == "Page.javascriptDialogOpening":
            # confirm()/alert() block the page until answered: accept, like a user clicking OK.
            page.dialogs.append(params.get("message", ""))
            self.send("Page.handleJavaScriptDialog", {"accept": True}, page.session)

    def new_page(self) -> Page:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        page = Page(self, session)
        self.pages[session] = page
        page.call("Page.enable")
        page.call("Runtime.enable")
        return page


class Page:
    """One tab: navigate, evaluate JavaScript, wait for conditions, take screenshots."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session
        self.errors: list[str] = []
        self.console: list[str] = []
        self.dialogs: list[str] = []

    def call(
        self, method: str, params: dict[str, Any] | None = None, timeout: float = 30.0
    ) -> dict[str, Any]:
        return self.browser.call(method, params, self.session, timeout)

    def goto(self, url: str, timeout: float = 30.0) -> None:
        """Load ``url`` as a new document (a change of fragment alone is no load: use reload)."""
        self.eval("window.__cdpOld = true")  # tells the new document from the one being left
        result = self.call("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise CDPError(f"navigation to {url} failed: {result['errorText']}")
        self._wait_loaded(timeout)

    def reload(self, timeout: float = 30.0) -> None:
        self.eval("window.__cdpOld = true")
        self.call("Page.reload", {"ignoreCache": True})
        self._wait_loaded(timeout)

    def _wait_loaded(self, timeout: float) -> None:
        self.wait_for(
            "!window.__cdpOld && document.readyState === 'complete'",
            timeout=timeout,
            what="page load",
        )

    def close(self) -> None:
        self.browser.pages.pop(self.session, None)
        target = self.call("Target.getTargetInfo")["targetInfo"]["targetId"]
        self.browser.call("Target.closeTarget", {"targetId": target})

    def eval(self, expression: str, timeout: float = 30.0) -> Any:
        """The JSON value of ``expression`` (awaited if it is a promise)."""
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            timeout=timeout,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise CDPError(details.get("exception", {}).get("description") or details.get("text"))
        return result.get("result", {}).get("value")

    def poll(self, expression: str, timeout: float, interval: float = 0.02) -> Any:
        """The first truthy value of ``expression`` within ``timeout`` seconds, else None."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.eval(expression)
            if value:
                return value
            if time.monotonic() >= deadline:
                return None
            time.sleep(interval)

    def wait_for(self, expression: str, *, timeout: float, what: str = "") -> Any:
        value = self.poll(expression, timeout)
        if not value:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what or expression}\n{self.diagnostics()}"
            )
        return value

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def diagnostics(self) -> str:
        return f"page errors: {self.errors[-10:]}\nconsole: {self.console[-20:]}"
