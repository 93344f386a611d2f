"""A minimal Chrome DevTools Protocol driver for headless Chromium: navigate, read the DOM, fill and
submit forms, screenshot. The pages under test carry no JavaScript; what runs here runs through the
protocol (like a user's hands), not in the page."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import websocket

from conftest import free_port, wait_until


class Chromium:
    def __init__(self, tmp: Path):
        binary = shutil.which("chromium") or shutil.which("chromium-browser")
        if not binary:
            pytest.fail("chromium is not installed (the test recipe installs Debian's chromium)")
        self.port = free_port()
        self.process = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", f"--remote-debugging-port={self.port}",
             f"--user-data-dir={tmp / 'chromium-profile'}", "--window-size=1200,1000", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_until(self._ready, what="chromium's DevTools endpoint", timeout=60)
        page = next(t for t in httpx.get(f"http://127.0.0.1:{self.port}/json/list", timeout=5).json() if t["type"] == "page")
        self.socket = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        self.next_id = 0
        self.call("Page.enable")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError("chromium exited")
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/json/version", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def url(self) -> str:
        return self.evaluate("location.href")

    def html(self) -> str:
        return self.evaluate("document.documentElement.outerHTML")

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.settle()

    def settle(self) -> None:
        """Waits until the document (after any redirects and form posts) has loaded."""
        wait_until(lambda: self.evaluate("document.readyState") == "complete", what="the page loaded", timeout=20)

    def submit(self, selector: str, **fields) -> None:
        """Fills `fields` (by element id) and submits the form holding `selector`."""
        before = self.evaluate("performance.timeOrigin")
        script = "".join(f"document.getElementById({json.dumps(k)}).value = {json.dumps(v)};" for k, v in fields.items())
        # A submit button is clicked (its name and value go with the form); any other field's form
        # is submitted as pressing Enter would.
        self.evaluate(script + f"(e => e.type === 'submit' ? e.click() : e.form.requestSubmit())(document.querySelector({json.dumps(selector)}));")
        wait_until(lambda: self.evaluate("performance.timeOrigin") != before, what="the form's answer", timeout=20)
        self.settle()

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.socket.close()
        finally:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
