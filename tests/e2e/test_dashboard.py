"""The HTTP listener end to end: the dashboard in a real browser (Debian's
chromium, headless, driven through chromium-driver's WebDriver HTTP API with
urllib only), and the read-only API it stands on, on every backend.

Screenshots go to $CBD_BUILD_DIR/artifacts/ (kept by CI as test artifacts).
"""

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import BUILD, CBCTL, Client, cbctl

ARTIFACTS = BUILD / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SANITIZED = os.environ.get("CBD_SANITIZED") == "1"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url, method="GET", headers=None, timeout=10):
    """(status, headers, body bytes) of one request; HTTP errors included."""
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def wait_for(predicate, timeout, what, interval=0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Browser:
    """Headless chromium through chromedriver's W3C WebDriver HTTP API."""

    def __init__(self, workdir):
        missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
        assert not missing, (f"{missing} not installed: the dashboard test needs Debian's "
                             "chromium and chromium-driver (scripts/dev.sh installs them)")
        self.port = free_port()
        self.log = open(workdir / "chromedriver.log", "wb")
        self.driver = subprocess.Popen([CHROMEDRIVER, f"--port={self.port}"],
                                       stdout=self.log, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{self.port}"
        wait_for(self._ready, 20, "chromedriver to start")
        profile = tempfile.mkdtemp(prefix="cbd-chromium-", dir=str(workdir))
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                # --no-sandbox: CI runs as root, where chromium's sandbox
                # cannot start.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--hide-scrollbars",
                         f"--user-data-dir={profile}", "--window-size=1280,900"],
            },
        }}}
        self.session = self._call("POST", "/session", caps)["sessionId"]

    def _ready(self):
        try:
            with urllib.request.urlopen(self.base + "/status", timeout=1) as r:
                return json.load(r)["value"]["ready"]
        except (OSError, ValueError, KeyError):
            return False

    def _call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return json.load(r)["value"]
        except urllib.error.HTTPError as e:
            raise AssertionError(f"WebDriver {method} {path}: {e.read()[:500]!r}") from None

    def _session(self, method, path, body=None):
        return self._call(method, f"/session/{self.session}{path}", body)

    def open(self, url):
        self._session("POST", "/url", {"url": url})

    def js(self, script, *args):
        return self._session("POST", "/execute/sync", {"script": script, "args": list(args)})

    def viewport(self, width, height):
        """Lays the page out at exactly this CSS width, as a phone would."""
        self._session("POST", "/goog/cdp/execute", {
            "cmd": "Emulation.setDeviceMetricsOverride",
            "params": {"width": width, "height": height, "deviceScaleFactor": 1,
                       "mobile": width < 600}})

    def screenshot(self, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self._session("GET", "/screenshot")))
        return path

    def close(self):
        try:
            self._call("DELETE", f"/session/{self.session}")
        finally:
            self.driver.terminate()
            try:
                self.driver.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.driver.kill()
                self.driver.wait()
            self.log.close()


@pytest.fixture
def browser(workdir):
    b = Browser(workdir)
    yield b
    b.close()


# What the page shows for one row, read from the DOM.
ROW = """
const tr = document.querySelector('#rows tr[data-key="' + CSS.escape(arguments[0]) + '"]');
if (!tr) return null;
return {state: tr.querySelector('.state').textContent, pin: tr.querySelector('.pin').textContent};
"""


def test_dashboard_in_a_browser(start_cbd, browser):
    port = free_port()
    d = start_cbd("--http-listen", f"127.0.0.1:{port}")
    url = f"http://127.0.0.1:{port}/"

    # 1. 50 circuits, and the page renders 50 rows.
    keys = [f"svc/{name}-{i:02d}" for i, name in
            enumerate(["payments", "search", "ledger", "mail", "auth"] * 10)]
    requests = "".join(json.dumps({"op": "get", "key": k}) + "\n" for k in keys)
    # Some counts and a probing circuit, so the screenshots show more than one state.
    requests += "".join(json.dumps({"op": "failure", "key": k}) + "\n"
                        for k in keys[1:4] * 3 + keys[5:6])
    requests += json.dumps({"op": "transition", "key": keys[2], "to": "half-open"}) + "\n"
    r = subprocess.run([CBCTL, "--socket", d.sock, "pipe"], input=requests,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    browser.open(url)
    wait_for(lambda: browser.js("return document.querySelectorAll('#rows tr').length") == 50,
             10, "50 rows")
    assert browser.js(ROW, keys[7]) == {"state": "closed", "pin": "—"}
    # Marks this document: a reload would lose it.
    browser.js("window.loadedOnce = true")

    # 2. Opened through cbctl, the row says so within 1 s, without a reload.
    opened = keys[7]
    r = cbctl("transition", opened, "open", sock=d.sock)
    assert r.returncode == 0, r.stderr
    started = time.monotonic()
    wait_for(lambda: browser.js(ROW, opened)["state"] == "open", 1.0, f"{opened} to show open")
    shown_after = time.monotonic() - started
    assert browser.js("return window.loadedOnce === true"), "the page reloaded"
    assert browser.js("return document.querySelectorAll('#rows tr.r-open').length") == 1

    # 3. Forced with a reason, the reason appears.
    pinned = keys[13]
    reason = "db migration <b>#42</b>"  # markup must show as text
    r = cbctl("force", pinned, "open", "--reason", reason, sock=d.sock)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: reason in browser.js(ROW, pinned)["pin"], 2.0, "the pin's reason")
    assert browser.js(ROW, pinned)["pin"].startswith("pinned open")
    assert browser.js("return document.querySelector('#rows b b') === null")
    assert browser.js("return window.loadedOnce === true"), "the page reloaded"

    # 4. Screenshots at desktop and phone width; at phone width nothing runs
    # off the side of the screen.
    for width, height in ((1280, 900), (390, 844)):
        browser.viewport(width, height)
        time.sleep(0.3)  # one layout and paint at the new width
        assert browser.js("return document.documentElement.scrollWidth") <= width
        shot = browser.screenshot(ARTIFACTS / f"dashboard-{width}.png")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"open shown {shown_after * 1000:.0f} ms after cbctl returned")


def test_dashboard_banner_and_reconnect(start_cbd, browser, workdir):
    port = free_port()
    state = str(workdir / "state.db")
    d = start_cbd("--http-listen", f"127.0.0.1:{port}", "--state-file", state)
    Client(d.sock).call({"op": "transition", "key": "kept", "to": "open"})
    browser.open(f"http://127.0.0.1:{port}/")
    wait_for(lambda: browser.js(ROW, "kept"), 10, "the row")
    assert not browser.js("return document.getElementById('banner').offsetParent !== null")

    assert d.stop() == 0
    wait_for(lambda: browser.js("return document.getElementById('banner').offsetParent !== null"),
             5, "the lost-stream banner")
    assert "Reconnecting" in browser.js("return document.getElementById('banner').textContent")

    d2 = start_cbd("--http-listen", f"127.0.0.1:{port}", "--state-file", state)
    Client(d2.sock).call({"op": "transition", "key": "after", "to": "open"})
    wait_for(lambda: browser.js("return document.getElementById('banner').offsetParent === null"),
             15, "the banner to go once the stream is back")
    wait_for(lambda: (browser.js(ROW, "after") or {}).get("state") == "open", 10,
             "a circuit made while the page was away")
    Client(d2.sock).call({"op": "transition", "key": "kept", "to": "closed"})
    wait_for(lambda: browser.js(ROW, "kept")["state"] == "closed", 2, "live updates again")


def test_dashboard_keeps_up_with_100_transitions_a_second(start_cbd, browser):
    port = free_port()
    d = start_cbd("--http-listen", f"127.0.0.1:{port}")
    keys = [f"burst/{i:03d}" for i in range(100)]
    c = Client(d.sock)
    for k in keys:
        c.call({"op": "get", "key": k})
    browser.open(f"http://127.0.0.1:{port}/")
    wait_for(lambda: browser.js("return document.querySelectorAll('#rows tr').length") == 100,
             10, "100 rows")
    # Three seconds at 100 transitions a second, paced; each key ends open.
    started = time.monotonic()
    for n in range(300):
        key = keys[n % 100]
        c.call({"op": "transition", "key": key, "to": "open" if n >= 200 else
                ("half-open" if n % 2 else "closed")})
        time.sleep(max(0.0, started + (n + 1) / 100 - time.monotonic()))
    wait_for(lambda: browser.js("return document.querySelectorAll('#rows tr.r-open').length") == 100,
             2, "every row open")
    assert "100 open" in browser.js("return document.getElementById('summary').textContent")
    assert not browser.js("return document.getElementById('banner').offsetParent !== null")


def test_dashboard_filters_and_sorts(start_cbd, browser, workdir):
    port = free_port()
    clock = workdir / "clock"
    now = int(time.time() * 1000)
    clock.write_text(str(now))
    d = start_cbd("--http-listen", f"127.0.0.1:{port}", "--test-clock", str(clock))
    c = Client(d.sock)
    # One second apart, so "last change" orders them without ties: a/2 and
    # b/1 last changed when made, the others later.
    for n, request in enumerate([
            {"op": "get", "key": "b/1"}, {"op": "get", "key": "a/2"},
            {"op": "transition", "key": "b/2", "to": "open"},
            {"op": "transition", "key": "a/1", "to": "half-open"},
            {"op": "force", "key": "c/1", "state": "closed", "reason": "tested"}]):
        clock.write_text(str(now - 10_000 + n * 1000))
        assert c.call(request)["ok"]
    browser.open(f"http://127.0.0.1:{port}/")
    keys = "return [...document.querySelectorAll('#rows tr')].map(tr => tr.dataset.key)"
    wait_for(lambda: len(browser.js(keys)) == 5, 10, "5 rows")
    control = """
        const el = document.getElementById(arguments[0]);
        el.value = arguments[1];
        el.dispatchEvent(new Event(arguments[0] === 'prefix' ? 'input' : 'change'));
    """

    def shows(expected, what):
        wait_for(lambda: browser.js(keys) == expected, 2, what)

    shows(["a/1", "a/2", "b/1", "b/2", "c/1"], "key order")
    browser.js(control, "sort", "state")
    shows(["b/2", "a/1", "a/2", "b/1", "c/1"], "open, half-open, then closed")
    browser.js("document.getElementById('direction').click()")
    shows(["c/1", "b/1", "a/2", "a/1", "b/2"], "the reverse")
    browser.js("document.getElementById('direction').click()")
    browser.js(control, "sort", "change")
    shows(["c/1", "a/1", "b/2", "a/2", "b/1"], "the newest change first")
    browser.js(control, "sort", "key")
    browser.js(control, "state", "closed")
    shows(["a/2", "b/1", "c/1"], "closed circuits only")
    browser.js(control, "state", "pinned")
    shows(["c/1"], "pinned circuits only")
    browser.js(control, "state", "")
    browser.js(control, "prefix", "b/")
    shows(["b/1", "b/2"], "keys under b/")
    # A filtered-out circuit that changes into view appears.
    browser.js(control, "state", "open")
    shows(["b/2"], "open under b/")
    c.call({"op": "transition", "key": "b/1", "to": "open"})
    shows(["b/1", "b/2"], "b/1 once it opens")


# --- the API, without a browser --------------------------------------------

@pytest.mark.parametrize("backend", ["memory", "durable", "redis"])
def test_api_circuits_on_every_backend(start_cbd, workdir, backend):
    port = free_port()
    args = ["--http-listen", f"127.0.0.1:{port}"]
    if backend == "durable":
        args += ["--state-file", str(workdir / "state.db"), "--sync", "always"]
    elif backend == "redis":
        from conftest import shared_redis
        args += ["--backend", "redis", "--redis", "unix://" + shared_redis(workdir)]
    d = start_cbd(*args)
    c = Client(d.sock)
    for k in ["a/1", "a/2", "b/1"]:
        c.call({"op": "get", "key": k})
    c.call({"op": "transition", "key": "a/2", "to": "open"})
    base = f"http://127.0.0.1:{port}"

    status, headers, body = http(f"{base}/api/circuits?prefix=a%2F&limit=1")
    assert status == 200 and headers["Content-Type"] == "application/json"
    page = json.loads(body)
    assert [e["key"] for e in page["circuits"]] == ["a/1"] and page["next"] == "a/1"
    page = json.loads(http(f"{base}/api/circuits?prefix=a/&after=a/1")[2])
    assert [(e["key"], e["snapshot"]["state"]) for e in page["circuits"]] == [("a/2", "open")]
    assert page["next"] is None
    page = json.loads(http(f"{base}/api/circuits?state=open")[2])
    assert [e["key"] for e in page["circuits"]] == ["a/2"]
    status, _, body = http(f"{base}/api/policy?key=b/1")
    assert status == 200 and json.loads(body)["policy"]["failureThreshold"] == 5

    # Bad input: a clear error, and the daemon stays up.
    status, _, body = http(f"{base}/api/circuits?state=sideways")
    assert status == 400 and json.loads(body)["error"]["code"] == "invalid_state"
    status, _, body = http(f"{base}/api/circuits?limit=0")
    assert status == 400 and json.loads(body)["error"]["code"] == "invalid_request"
    status, _, body = http(f"{base}/api/circuits?limit=ten")
    assert status == 400 and b"limit" in body
    status, _, body = http(f"{base}/api/circuits?colour=red")
    assert status == 400 and b"colour" in body
    assert http(f"{base}/api/circuits?prefix=%zz")[0] == 400
    assert http(f"{base}/api/circuits?prefix=%FF")[0] == 400  # not UTF-8
    assert http(f"{base}/api/circuits?prefix=" + "x" * 5000)[0] == 414
    assert http(f"{base}/nothing-here")[0] == 404
    assert c.call({"op": "ping"})["ok"]


def test_nothing_served_changes_state(start_cbd):
    port = free_port()
    d = start_cbd("--http-listen", f"127.0.0.1:{port}")
    c = Client(d.sock)
    c.call({"op": "get", "key": "k"})
    base = f"http://127.0.0.1:{port}"
    for method in ["POST", "PUT", "DELETE", "PATCH"]:
        for path in ["/", "/metrics", "/api/circuits", "/api/events", "/api/policy?key=k"]:
            status, headers, _ = http(base + path, method=method)
            assert status == 405 and headers["Allow"] == "GET, HEAD", (method, path)
    # /api/policy of an unknown key does not create it.
    assert http(f"{base}/api/policy?key=never")[0] == 200
    page = json.loads(http(f"{base}/api/circuits")[2])
    assert [e["key"] for e in page["circuits"]] == ["k"]
    stats = c.call({"op": "stats"})
    writes = ["success", "failure", "transition", "reset", "acquire", "report", "force",
              "unforce", "configure", "import"]
    assert all(stats["requests"][op] == 0 for op in writes)
    # A page elsewhere cannot read the API by naming 127.0.0.1 as its own host.
    assert http(f"{base}/api/circuits", headers={"Host": "evil.example"})[0] == 421
    assert http(f"{base}/api/circuits", headers={"Host": f"localhost:{port}"})[0] == 200


def read_sse(sock, want, timeout=10):
    """Reads SSE bytes from `sock` until `want` messages arrived."""
    sock.settimeout(timeout)
    buf = b""
    while buf.count(b"\n\n") < want:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


def test_events_stream_and_its_bounds(start_cbd):
    port = free_port()
    d = start_cbd("--http-listen", f"127.0.0.1:{port}", "--http-max-event-clients", "2",
                  "--watch-queue", "5")
    c = Client(d.sock)
    request = (f"GET /api/events?prefix=p/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").encode()
    s1 = socket.create_connection(("127.0.0.1", port))
    s1.sendall(request)
    head = read_sse(s1, 1)  # the headers (CRLF) and the retry message
    assert b"200 OK" in head and b"text/event-stream" in head
    c.call({"op": "transition", "key": "q/1", "to": "open"})  # not under p/
    c.call({"op": "transition", "key": "p/1", "to": "open"})
    events = read_sse(s1, 1)
    assert events.startswith(b"data: {") and events.endswith(b"}\n\n")
    ev = json.loads(events[len(b"data: "):])
    assert ev["event"] == "transition" and ev["key"] == "p/1" and ev["to"] == "open"

    # The cap: a second stream is served, a third refused.
    # A small receive window, so the daemon's writes to it block soon.
    s2 = socket.socket()
    s2.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s2.connect(("127.0.0.1", port))
    s2.sendall(request)
    read_sse(s2, 1)
    status, headers, _ = http(f"http://127.0.0.1:{port}/api/events")
    assert status == 503 and headers["Retry-After"] == "5"

    # A stream that does not read falls behind like a watcher, and is
    # dropped like one: an overflow message, then the close. (s1 goes first,
    # so that s2 is the only stream not reading.)
    s1.close()
    big = "p/" + "x" * 1000
    batch = "".join(json.dumps({"op": "transition", "key": big, "to": to}) + "\n"
                    for to in ["open", "closed"] * 100).encode()
    for _ in range(200):  # at most 40,000 events of 1 KiB
        c.send(batch)
        for _ in range(200):
            c.line()
        if "dropping it" in d.log():
            break
    wait_for(lambda: "event stream" in d.log() and "dropping it" in d.log(), 10,
             "the slow stream to be dropped")
    s2.settimeout(10)
    rest = b""
    while True:
        chunk = s2.recv(1 << 20)
        if not chunk:
            break
        rest += chunk
    assert b'data: {"event":"overflow","dropped":' in rest
    assert c.call({"op": "stats"})["events"]["dropped"] > 0
    # Both places are free again.
    streams = []
    for _ in range(2):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(request)
        assert b"200 OK" in read_sse(s, 1)
        streams.append(s)
    for s in streams + [s2]:
        s.close()
    assert c.call({"op": "ping"})["ok"]


def test_remote_bind_needs_allow_remote(start_cbd):
    d = start_cbd("--http-listen", "0.0.0.0:0", wait=False)
    assert d.proc.wait(timeout=10) == 1
    assert "not a loopback address" in d.log() and "--http-allow-remote" in d.log()
    d = start_cbd("--http-listen", "0.0.0.0:0", "--http-allow-remote",
                  sock=str(Path(d.sock).parent / "b.sock"))
    assert "anyone who can reach it sees every circuit" in d.log()
    assert Client(d.sock).call({"op": "ping"})["ok"]


def test_metrics_listen_is_an_alias(start_cbd):
    port = free_port()
    d = start_cbd("--metrics-listen", f"127.0.0.1:{port}")
    Client(d.sock).call({"op": "failure", "key": "m"})
    status, headers, body = http(f"http://127.0.0.1:{port}/metrics?perCircuit=true")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert b'cbd_circuit_failures{key="m"} 1' in body
    status, headers, body = http(f"http://127.0.0.1:{port}/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert b"<title>cbd circuits</title>" in body
    # Nothing outside the page may load: no CDN, no framework.
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert b"http://" not in body and b"https://" not in body
