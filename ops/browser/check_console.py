"""The license console in headless Chromium, clicked through as the seed's
Owner would (grant, revoke, offline license, machine, members, keys,
webhooks: a receiver here verifies the deliveries with the secret the page
showed once) and
then as a User (no management control; a forged POST answers 403). Every
step asserts what the person sees, and what the broker says through the
CLI (`status --json`, `offline verify`). Saves a screenshot of each page
into SHOTS. Exits non-zero with the reason on any mismatch.

usage: check_console.py BASE_URL OPERATOR_KEY OWNER_KEY USER_KEY CLI SHOTS [CHROMIUM_FLAG...]
  CLI: the license-broker command line, with LB_SERVER/LB_CA set, as a shell prefix
"""
import csv
import filecmp
import hashlib
import hmac
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cdp import Chromium, fail, wait_for_file  # noqa: E402

BASE, OPERATOR, OWNER, USER, CLI, SHOTS = sys.argv[1:7]
FLAGS = sys.argv[7:]
assert BASE.split("://")[1].startswith("127.0.0.1:"), "loopback only"
ORG = "/org/default"
KSE, KRE = "kse-node-locked-annual", "kre-floating-annual"


def cli(args, key=OWNER, check=True):
    r = subprocess.run(f"LB_API_KEY={key} {CLI} {args}", shell=True, capture_output=True, text=True)
    if check and r.returncode != 0:
        fail(f"`{args}` exited {r.returncode}: {r.stderr}")
    return r


def status():
    return {p["pool"]: p for p in json.loads(cli("status --json").stdout)["pools"]}


def sign_in(page, key, lands=ORG):
    page.go(BASE + "/", "/")
    page.fill("input[name=key]", key)
    page.click("form[action='/signin'] button", lands, "sign in")


def note(page):
    return page.text("[role=status]")


def licensed_users(page):
    return json.loads(page.js("JSON.stringify([...document.querySelectorAll('#licensed tbody label')].map(l => l.textContent))"))


def grant_and_revoke(page):
    page.go(f"{BASE}{ORG}/licenses?pool={KSE}", "/licenses")
    page.fill("#emails", "a@x.io, b@x.io\nc@x.io")
    page.click("#licensed form[action$='/licenses/grant'] button", "note=", "Grant licenses")
    said = note(page)
    if "Granted: a@x.io, b@x.io" not in said or "c@x.io" not in said or "GRANT_LIMIT" not in said:
        fail(f"after granting three on a quota of two the page says: {said!r}")
    if sorted(licensed_users(page)) != ["a@x.io", "b@x.io"]:
        fail(f"licensed users after the grant: {licensed_users(page)}")
    page.screenshot(os.path.join(SHOTS, "console-licenses.png"))
    page.js("document.querySelector('#licensed input[value=\"a@x.io\"]').click(); true")
    page.click("#licensed form[action$='/licenses/revoke'] button", "note=", "Revoke selected")
    if "Revoked: a@x.io" not in note(page) or licensed_users(page) != ["b@x.io"]:
        fail(f"after revoking a@x.io: {note(page)!r}, {licensed_users(page)}")
    print("grant and revoke ok")


def offline_license(page, downloads):
    page.go(f"{BASE}{ORG}/licenses?pool={KSE}", "/licenses")
    page.click("a[href*='/offline/new']", "/offline/new", "Create offline license")
    page.fill("#machine", "lab-pc-7")
    page.click("form[action$='/offline/review'] button", "/offline/review", "Review")
    text = page.text("main")
    if "cannot be undone" not in text or "lab-pc-7" not in text:
        fail(f"the confirmation does not say what it does: {text!r}")
    page.screenshot(os.path.join(SHOTS, "console-offline-confirm.png"))
    page.click("form[action$='/offline/create'] button", "created=", "Create")
    path = os.path.join(downloads, "KSE_lab-pc-7.lic")
    wait_for_file(path, "the offline license's download")
    pub = os.path.join(downloads, "public.pem")
    with open(pub, "w") as f:
        f.write(cli("offline public-key").stdout)
    verified = subprocess.run(f"{CLI} offline verify --public-key {pub} --machine-id lab-pc-7 {path}",
                              shell=True, capture_output=True, text=True)
    if verified.returncode != 0:
        fail(f"offline verify of the downloaded file: {verified.returncode} {verified.stdout} {verified.stderr}")
    if page.count("#offline a[download]") != 1:
        fail("the offline license is not in the Offline Licenses list")
    # Downloading it again from the list gives the same bytes.
    os.rename(path, path + ".first")
    page.js("document.querySelector('#offline a[download]').click(); true")
    wait_for_file(path, "the second download")
    if not filecmp.cmp(path, path + ".first", shallow=False):
        fail("the file downloaded from the list differs from the one handed out at creation")
    print("offline license ok:", verified.stdout.strip())


def deactivate(page):
    before = status()[KRE]
    page.go(f"{BASE}{ORG}/licenses?pool={KRE}", "/licenses")
    available = page.text("#available").strip()
    if available != str(before["quota"] - before["in_use"]):
        fail(f"the box says {available} available, status {before['quota']} - {before['in_use']}")
    if page.count("#online tbody tr") != before["in_use"]:
        fail(f"{page.count('#online tbody tr')} online licenses on the page, {before['in_use']} in status")
    page.click("#machines a[href*='machine=ci-1']", "/machines/deactivate", "Deactivate ci-1")
    if "live session" not in page.text("main"):
        fail(f"the confirmation does not say it ends ci-1's session: {page.text('main')!r}")
    page.screenshot(os.path.join(SHOTS, "console-deactivate.png"))
    page.click("form[action$='/machines/deactivate'] button", "note=", "Deactivate")
    after = status()[KRE]
    if "ci-1 was deactivated" not in note(page) or page.count("#machines tbody tr") != 1:
        fail(f"after deactivating ci-1: {note(page)!r}, {page.count('#machines tbody tr')} machines listed")
    if (after["machines"], after["in_use"]) != (before["machines"] - 1, before["in_use"] - 1):
        fail(f"status after deactivating: {after}, before: {before}")
    print("deactivate ok")


def local_times_and_copy(page, key):
    """The console's script: times read in the viewer's zone (Chromium is
    told it is in Kolkata, UTC+5:30), the UTC text kept as the tooltip; the
    shown-once key's Copy button puts it on the clipboard."""
    iso, shown, tip = page.js("""(() => { const t = document.querySelector('main time[datetime]');
        return t ? [t.getAttribute('datetime'), t.textContent, t.title] : [null, null, null]; })()""")
    if not iso:
        fail("no time on the members page")
    local = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(timezone(timedelta(hours=5, minutes=30)))
    clock = {local.strftime("%H:%M"), f"{local.hour % 12 or 12}:{local.minute:02d}"}
    if "UTC" not in tip or "UTC" in shown or not any(c in shown for c in clock):
        fail(f"{iso} is shown as {shown!r} (tooltip {tip!r}), not in the viewer's zone ({clock})")
    page.js("document.querySelector('button[data-copy=key-value]').click(); true")
    deadline, copied = time.time() + 5, ""
    while time.time() < deadline and copied != key:
        copied = page.js("navigator.clipboard.readText().catch(e => String(e))")
        time.sleep(0.1)
    if copied != key:
        fail(f"Copy put {copied!r} on the clipboard, not the key")
    print(f"local times ok ({iso} reads {shown!r}); the key's Copy button copies it")


def members_and_keys(page):
    page.go(f"{BASE}{ORG}/members", "/members")
    page.fill("#add-email", "d@x.io")
    page.click("form[action$='/members/add'] button", "note=", "Add member")
    if "d@x.io is a member" not in note(page):
        fail(f"adding d@x.io: {note(page)!r}")
    page.fill("#key-email", "d@x.io")
    page.click("form[action$='/keys/create'] button", "/keys/create", "Create key")
    key = page.text("#key-value").strip()
    if not key.startswith("lbk_"):
        fail(f"no new key shown: {key!r}")
    if cli("status", key=key, check=False).returncode != 0:
        fail("the key shown does not work")
    local_times_and_copy(page, key)
    page.screenshot(os.path.join(SHOTS, "console-members.png"))
    key_id = page.text("[role=status]").split()[1]
    page.click(f"#keys form:has(input[value='{key_id}']) button", "note=", "Revoke key")
    if f"Key {key_id} was revoked" not in note(page) or cli("status", key=key, check=False).returncode == 0:
        fail(f"revoking key {key_id}: {note(page)!r}")
    print("members and keys ok")


class Hooks(http.server.BaseHTTPRequestHandler):
    """A webhook receiver on loopback: keeps each request's headers and body."""
    got = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        Hooks.got.append((dict(self.headers), body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def delivered(secret, detail):
    """The delivery whose detail holds `detail`, checked as docs/EVENTS.md says."""
    for _ in range(200):
        for headers, body in Hooks.got:
            if detail in json.loads(body)["data"].get("detail", ""):
                ts = headers["webhook-timestamp"]
                mine = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
                if not any(hmac.compare_digest(s[3:], mine) for s in headers["webhook-signature"].split()):
                    fail(f"a delivery's signature does not verify with the secret shown: {headers}")
                return json.loads(body)
        time.sleep(0.05)
    fail(f"no delivery with {detail!r}; got {len(Hooks.got)}")


def webhooks(page):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hooks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    page.go(f"{BASE}{ORG}/webhooks", "/webhooks")
    page.fill("#hook-url", url)
    page.fill("#hook-events", "audit.*")
    page.click("form[action$='/webhooks/add'] button", "/webhooks/add", "Add webhook")
    secret = page.text("#secret-value").strip()
    if not secret.startswith("whsec_"):
        fail(f"no secret shown: {secret!r}")
    hook = note(page).split()[1]
    time.sleep(1.5)  # the delivery task starts within a second
    cli("user add --org default hooked@x.io")
    event = delivered(secret, "user=hooked@x.io")
    page.go(f"{BASE}{ORG}/webhooks?deliveries={hook}", "/webhooks")
    if event["id"] not in page.text("#deliveries") or "200" not in page.text("#deliveries"):
        fail(f"recent deliveries do not show {event['id']} taken: {page.text('#deliveries')!r}")
    page.screenshot(os.path.join(SHOTS, "console-webhooks.png"))
    page.click(f"#webhooks form[action$='/rotate']:has(input[value='{hook}']) button", "/webhooks/rotate", "New secret")
    rotated = page.text("#secret-value").strip()
    if not rotated.startswith("whsec_") or rotated == secret:
        fail(f"no new secret shown: {rotated!r}")
    page.go(f"{BASE}{ORG}/webhooks", "/webhooks")
    if page.count("#secret-value"):
        fail("a secret is shown again")
    time.sleep(1.5)  # the task restarts with the new secret
    cli("user add --org default rotated@x.io")
    delivered(rotated, "user=rotated@x.io")
    page.click(f"#webhooks form[action$='/remove']:has(input[value='{hook}']) button", "note=", "Remove")
    if f"Webhook {hook} was removed" not in note(page) or page.count("#webhooks tbody tr"):
        fail(f"removing webhook {hook}: {note(page)!r}")
    server.shutdown()
    print("webhooks ok: added (secret shown once), delivered and verified, new secret, removed")


def utilization(page, downloads):
    page.go(f"{BASE}{ORG}/usage?preset=7d", "/usage")
    page.fill("#f-user", "u@x.io")
    page.click("form.filters button", "user=u%40x.io", "Show")
    users = json.loads(page.js("JSON.stringify([...document.querySelectorAll('#sessions tbody tr')].map(r => r.cells[0].textContent))"))
    if len(users) != 2 or set(users) != {"u@x.io"}:
        fail(f"filtered by u@x.io, the table lists {users}")
    if page.count("svg.usage polyline") < 1:
        fail("no session-time line drawn")
    page.screenshot(os.path.join(SHOTS, "console-usage.png"))
    page.js("document.getElementById('export').click(); true")
    deadline, name = time.time() + 15, None
    while time.time() < deadline and not name:
        name = next((f for f in os.listdir(downloads) if f.startswith("License Utilization_default_") and f.endswith(".csv")), None)
        time.sleep(0.1)
    if not name:
        fail(f"the export never downloaded (folder: {os.listdir(downloads)})")
    time.sleep(0.5)
    with open(os.path.join(downloads, name), newline="") as f:
        rows = list(csv.DictReader(f))
    if len(rows) != 2 or {r["user"] for r in rows} != {"u@x.io"} or any(float(r["duration_seconds"]) <= 0 for r in rows):
        fail(f"the exported CSV {name} holds {rows}")
    print(f"utilization ok: filtered by user, exported {name} with {len(rows)} rows")


def operator(page):
    sign_in(page, OPERATOR, "/orgs")
    page.fill("#org-name", "acme")
    page.fill("#org-owner", "boss@acme.io")
    page.fill("#org-end", "2027-06-30")
    page.click("form[action='/orgs/create'] button", "/orgs/create", "Create org")
    key = page.text("#owner-key").strip()
    if not key.startswith("lbk_") or cli("status --org acme", key=key, check=False).returncode != 0:
        fail(f"the new org's Owner key {key!r} is not shown or does not work")
    page.screenshot(os.path.join(SHOTS, "console-orgs.png"))
    page.go(f"{BASE}/org/acme/licenses", "/org/acme/licenses")
    page.js("document.getElementById('op-pool').value = 'kre-floating-annual'; true")
    page.fill("#op-quota", "5")
    page.click("form[action$='/pools'] button", "note=", "Set quota")
    if "quota 5" not in note(page) or status_of("acme", key)["kre-floating-annual"]["quota"] != 5:
        fail(f"setting acme's quota: {note(page)!r}")
    if "2027-06-30" not in page.text("#subscription"):
        fail(f"the subscription box does not say when it ends: {page.text('#subscription')!r}")
    print("operator ok: org created, its Owner's key works, quota set")
    page.click("form[action='/signout'] button", "/", "Sign out")


def status_of(org, key):
    return {p["pool"]: p for p in json.loads(cli(f"status --org {org} --json", key=key).stdout)["pools"]}


def as_user(page):
    page.click("form[action='/signout'] button", "/", "Sign out")
    sign_in(page, USER)
    page.go(f"{BASE}{ORG}/licenses?pool={KSE}", "/licenses")
    offered = page.count("main form, #machines a, #offline a")
    if offered or "Only the org's Owners and Admins" not in page.text("main"):
        fail(f"a User is offered {offered} management controls")
    code = page.js(f"""fetch('{ORG}/licenses/grant', {{method: 'POST',
        headers: {{'Content-Type': 'application/x-www-form-urlencoded'}},
        body: 'pool={KSE}&emails=u%40x.io&csrf=' + document.querySelector('input[name=csrf]').value}}).then(r => r.status)""")
    if code != 403:
        fail(f"a User's grant with their own valid CSRF token answered {code}, not 403")
    if page.js(f"fetch('{ORG}/members').then(r => r.status)") != 403:
        fail("a User may read the members page")
    if page.js(f"fetch('{ORG}/webhooks').then(r => r.status)") != 403:
        fail("a User may read the webhooks page")
    page.go(f"{BASE}{ORG}/usage?preset=today", "/usage")
    if page.count("svg.usage") != 1 or page.count("#export, #sessions tbody tr") != 0:
        fail("a User's utilization page should chart the totals and list no one's sessions")
    page.screenshot(os.path.join(SHOTS, "console-user.png"), width=390)
    print("as a User ok: no control offered, a forged grant is refused with 403")


def main():
    os.makedirs(SHOTS, exist_ok=True)
    downloads = tempfile.mkdtemp(prefix="lb-downloads-")
    chrome = Chromium(FLAGS, downloads=downloads)
    chrome.page.call("Emulation.setTimezoneOverride", timezoneId="Asia/Kolkata")
    chrome.page.call("Emulation.setFocusEmulationEnabled", enabled=True)
    chrome.browser.call("Browser.grantPermissions", permissions=["clipboardReadWrite", "clipboardSanitizedWrite"])
    try:
        operator(chrome.page)
        sign_in(chrome.page, OWNER)
        grant_and_revoke(chrome.page)
        offline_license(chrome.page, downloads)
        deactivate(chrome.page)
        members_and_keys(chrome.page)
        webhooks(chrome.page)
        utilization(chrome.page, downloads)
        as_user(chrome.page)
        print(f"console ok; screenshots in {SHOTS}")
    finally:
        chrome.close()


main()
