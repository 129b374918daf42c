"""Loads the broker's dashboard in headless Chromium over the DevTools
protocol, signs in with an API key, and checks the rendered page against
`license-broker status --json`: charts drawn, one row per live session,
the numbers equal; then kills a session with its button and checks it is
gone. Saves a screenshot. Exits non-zero (with the reason) on any
mismatch. Loopback only; every wait is bounded.

usage: [LB_SPKI=HASH] check_dashboard.py BASE_URL API_KEY STATUS_CMD SCREENSHOT
  LB_SPKI: base64 SHA-256 of the broker certificate's public key (https BASE_URL)
  STATUS_CMD: a shell command printing `status --json` (run before and after the kill)
"""
import base64
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cdp import Chromium, fail  # noqa: E402

BASE, KEY, STATUS_CMD, SHOT = sys.argv[1:5]
assert BASE.startswith(("https://127.0.0.1:", "http://127.0.0.1:")), "loopback only"
# The broker's certificate, trusted by its public key's SHA-256 (base64):
# needed for an https:// BASE with the broker's self-signed certificate.
SPKI = os.environ.get("LB_SPKI")



def status():
    out = subprocess.run(STATUS_CMD, shell=True, check=True, capture_output=True, text=True).stdout
    return {p["pool"]: p for p in json.loads(out)["pools"]}


def main():
    chrome = Chromium([f"--ignore-certificate-errors-spki-list={SPKI}"] if SPKI else [])
    try:
        page = chrome.page

        # Sign in through the form, as a person would.
        page.go(BASE + "/", "/")
        if not page.js("!!document.querySelector('input[name=key]')"):
            fail("no sign-in form at /")
        page.js(f"document.querySelector('input[name=key]').value = {json.dumps(KEY)};"
                "document.querySelector('form[action=\"/signin\"]').submit(); true")
        page.wait_for("/org/default", "after signing in")
        page.go(BASE + "/org/default?range=day", "/org/default?range=day")

        before = status()
        seen = json.loads(page.js("""JSON.stringify({
            pools: [...document.querySelectorAll('section.pool')].map(s => ({
                pool: s.dataset.pool,
                stats: Object.fromEntries([...s.querySelectorAll('[data-stat]')].map(b => [b.dataset.stat, b.textContent])),
                charts: s.querySelectorAll('svg.chart').length,
                peakLines: s.querySelectorAll('svg.chart path.line.peak').length,
                quotaLines: s.querySelectorAll('svg.chart path.line.quota').length,
                heatCells: s.querySelectorAll('svg.heatmap rect').length,
                levelBars: s.querySelectorAll('svg.bars rect').length,
                whatIfRows: s.querySelectorAll('table.what-if tr').length,
            })),
            sessions: [...document.querySelectorAll('tr.session')].map(r => r.dataset.session),
            killButtons: document.querySelectorAll('button.kill').length,
        })"""))
        if not seen["pools"]:
            fail("no pool on the page")
        for p in seen["pools"]:
            want = before.get(p["pool"])
            if want is None:
                fail(f"pool {p['pool']} is on the page but not in status")
            for stat in ("quota", "in_use", "machines"):
                if str(want[stat]) != p["stats"].get(stat):
                    fail(f"{p['pool']}: {stat} is {p['stats'].get(stat)} on the page, {want[stat]} in status")
            if p["charts"] != 1 or p["peakLines"] != 1 or p["quotaLines"] != 1:
                fail(f"{p['pool']}: the usage chart is missing its lines: {p}")
            if p["heatCells"] != 7 * 24:
                fail(f"{p['pool']}: the heatmap has {p['heatCells']} cells, not 168")
            if p["levelBars"] < 1 or p["whatIfRows"] < 2:
                fail(f"{p['pool']}: no time-at-level histogram or what-if table: {p}")
        live = sum(p["in_use"] for p in before.values())
        if len(seen["sessions"]) != live:
            fail(f"{len(seen['sessions'])} session rows, {live} seats in use in status")
        if seen["killButtons"] != live:
            fail(f"{seen['killButtons']} kill buttons for {live} sessions (signed in as the Owner)")
        shot = page.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        with open(SHOT, "wb") as f:
            f.write(base64.b64decode(shot["data"]))

        # Kill one session with its button.
        victim = seen["sessions"][0]
        page.js(f"document.querySelector('tr.session[data-session=\"{victim}\"] button.kill').click(); true")
        page.wait_for("killed=", "after the kill")
        after_rows = json.loads(page.js("JSON.stringify([...document.querySelectorAll('tr.session')].map(r => r.dataset.session))"))
        if victim in after_rows or len(after_rows) != live - 1:
            fail(f"session {victim} still listed after its kill: {after_rows}")
        after = sum(p["in_use"] for p in status().values())
        if after != live - 1:
            fail(f"status shows {after} seats in use after the kill, not {live - 1}")
        # A forged kill (no CSRF token) is refused.
        code = page.js(f"""fetch('/org/default/kill', {{method: 'POST',
            headers: {{'Content-Type': 'application/x-www-form-urlencoded'}},
            body: 'session={after_rows[0] if after_rows else victim}&csrf=forged'}}).then(r => r.status)""")
        if code != 403:
            fail(f"a kill with a forged CSRF token answered {code}, not 403")
        print(f"dashboard ok: {len(seen['pools'])} pool(s), {live} session rows, charts drawn, kill worked; screenshot {SHOT}")
    finally:
        chrome.close()


main()
