"""A small driver for headless Chromium over the DevTools protocol, shared
by the browser checks: starts Chromium on a fresh profile, opens the page
target, evaluates scripts, navigates and waits, takes screenshots, and
lets downloads land in a folder. Every wait is bounded; loopback only.
"""
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

from websocket import create_connection


def fail(why):
    print("FAIL:", why, file=sys.stderr)
    sys.exit(1)


class Session:
    """One DevTools websocket: a page's or the browser's."""

    def __init__(self, url):
        self.ws, self.next = create_connection(url, timeout=30), 0

    def call(self, method, **params):
        self.next += 1
        self.ws.send(json.dumps({"id": self.next, "method": method, "params": params}))
        deadline = time.time() + 30
        while time.time() < deadline:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next:
                if "error" in msg:
                    fail(f"{method}: {msg['error']}")
                return msg["result"]
        fail(f"{method}: no answer in 30 s")


class Page(Session):
    def js(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            fail(f"script error in {expr!r}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def location(self):
        return self.js("document.readyState + ' ' + location.pathname + location.search")

    def wait_for(self, path, what):
        """Waits until the loaded page's path and query contain `path`."""
        deadline, state = time.time() + 20, None
        while time.time() < deadline:
            state = self.location()
            if state and state.startswith("complete ") and path in state:
                return
            time.sleep(0.1)
        fail(f"the page never reached {path} ({what}); last: {state}")

    def go(self, url, path):
        self.call("Page.navigate", url=url)
        self.wait_for(path, url)

    def click(self, selector, then_path, what):
        """Clicks the element and waits for the page it leads to."""
        self.js("window.__left = true; true")
        if not self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return false; e.click(); return true; }})()"):
            fail(f"nothing to click for {what}: {selector}")
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                if not self.js("window.__left === true") and then_path in (self.location() or ""):
                    if self.location().startswith("complete "):
                        return
            except SystemExit:
                raise
            time.sleep(0.1)
        fail(f"clicking {what} never led to {then_path}; last: {self.location()}")

    def text(self, selector):
        return self.js(f"(document.querySelector({json.dumps(selector)}) || {{}}).innerText || ''")

    def count(self, selector):
        return self.js(f"document.querySelectorAll({json.dumps(selector)}).length")

    def fill(self, selector, value):
        if not self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return false; e.value = {json.dumps(value)}; return true; }})()"):
            fail(f"no field {selector}")

    def screenshot(self, path, width=1280):
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=900, deviceScaleFactor=1, mobile=width < 600)
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        self.call("Emulation.clearDeviceMetricsOverride")


class Chromium:
    """Headless Chromium on a fresh profile; `extra` flags are added (e.g.
    to trust the broker's certificate)."""

    def __init__(self, extra=(), downloads=None):
        self.profile = tempfile.mkdtemp(prefix="lb-chromium-")
        self.proc = subprocess.Popen(
            ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             f"--user-data-dir={self.profile}", "--window-size=1280,1400", *extra, "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port = self._port()
        base = f"http://127.0.0.1:{port}"
        if downloads:
            version = json.load(urllib.request.urlopen(base + "/json/version", timeout=10))
            # The setting lasts as long as the session that made it: keep it open.
            self.browser = Session(version["webSocketDebuggerUrl"])
            self.browser.call("Browser.setDownloadBehavior", behavior="allow", downloadPath=downloads)
        targets = json.load(urllib.request.urlopen(base + "/json", timeout=10))
        self.page = Page([t for t in targets if t["type"] == "page"][0]["webSocketDebuggerUrl"])
        self.page.call("Page.enable")

    def _port(self):
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.time() + 30
        while not os.path.exists(port_file) or not open(port_file).read().strip():
            if time.time() > deadline or self.proc.poll() is not None:
                fail("chromium did not start")
            time.sleep(0.1)
        return int(open(port_file).read().split()[0])

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


def wait_for_file(path, what, seconds=15):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if os.path.exists(path) and os.path.getsize(path) > 0:
            return
        time.sleep(0.1)
    fail(f"{what} never arrived at {path} (the folder holds {os.listdir(os.path.dirname(path))})")
