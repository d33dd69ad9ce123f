#!/usr/bin/env python3
"""Drives the on-call dashboard in headless Chromium over the DevTools protocol, stdlib only.

    python3 tests/dashboard/drive.py --chromium PATH --url http://127.0.0.1:PORT/dashboard \
        --token TOKEN --screenshot OUT.png [--timeout 60]

Chromium runs with `--remote-debugging-pipe`: it reads protocol commands from its fd 3 and
writes answers and events to its fd 4, each message JSON ended by a NUL byte.

The calling test talks to this script line by line:

1. at 390x844 (mobile, scale 2) it opens the url, signs in through the token form with a real
   click, and waits until the pool has rendered and the event stream is live (the token in
   sessionStorage, not in localStorage, a cookie or the url); then it prints `READY`;
2. it reads one line from stdin, a user id and optionally an event kind, and waits until the
   feed shows an event of that user (of that kind) and the user list shows its row;
3. it checks the layout (no horizontal scroll, every visible control at least 44x44 px), takes
   a full-page screenshot and prints one line of JSON: `{"ok": true, "events": n, "tiers":
   [...], "feed_kinds": [...]}`, exit 0; or `{"ok": false, "error": ..., "console_errors":
   [...]}`, exit 1. A JavaScript exception on the page, or a Content-Security-Policy
   violation, is a failure.

Every wait is bounded by --timeout seconds. Chromium runs in its own process group, killed on
the way out, and its temporary profile is removed.
"""

import argparse
import base64
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

VIEWPORT = {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}
MIN_TAP = 44
POLL = 0.1


class Failure(Exception):
    """A failed check: reported as `{"ok": false, "error": ...}`."""


class CdpError(Exception):
    pass


def log(*parts):
    print("drive:", *parts, file=sys.stderr, flush=True)


class Browser:
    """Chromium and its protocol pipe: `send` by id, events collected by a reader thread."""

    def __init__(self, chromium):
        self.profile = tempfile.mkdtemp(prefix="spotpool-dashboard-")
        try:
            self.launch(chromium)
        except BaseException:
            self.stop()
            raise

    def launch(self, chromium):
        self.stderr = open(os.path.join(self.profile, "chromium.log"), "wb")
        # The pipe ends the child gets, first moved to close-on-exec fds above 10 so that
        # the dup2 onto 3 and 4 in the child cannot clobber one with the other.
        command_read, command_write = os.pipe()
        answer_read, answer_write = os.pipe()
        self.out = command_write
        self.inp = answer_read
        child_read = fcntl.fcntl(command_read, fcntl.F_DUPFD_CLOEXEC, 10)
        child_write = fcntl.fcntl(answer_write, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(command_read)
        os.close(answer_write)

        def map_fds():
            # In the child, before exec: its fd 3 reads commands, its fd 4 writes answers.
            # dup2 leaves both inheritable; every other fd Python opened is close-on-exec.
            os.dup2(child_read, 3)
            os.dup2(child_write, 4)

        args = [
            chromium,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--mute-audio",
            "--hide-scrollbars",
            f"--user-data-dir={self.profile}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        try:
            self.process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=self.stderr,
                stderr=self.stderr,
                close_fds=False,
                preexec_fn=map_fds,
                start_new_session=True,
            )
        finally:
            os.close(child_read)
            os.close(child_write)
        self.write_lock = threading.Lock()
        self.lock = threading.Condition()
        self.next_id = 0
        self.answers = {}
        self.events = []
        self.closed = None
        self.reader = threading.Thread(target=self.read_loop, name="cdp-reader", daemon=True)
        self.reader.start()

    def read_loop(self):
        buffered = b""
        try:
            while True:
                chunk = os.read(self.inp, 1 << 16)
                if not chunk:
                    break
                buffered += chunk
                *messages, buffered = buffered.split(b"\0")
                for raw in messages:
                    if raw:
                        self.dispatch(json.loads(raw))
        except Exception as error:  # noqa: BLE001 - any reader failure ends the session
            with self.lock:
                self.closed = f"reading the protocol pipe failed: {error}"
                self.lock.notify_all()
            return
        with self.lock:
            self.closed = "chromium closed the protocol pipe"
            self.lock.notify_all()

    def dispatch(self, message):
        if message.get("method") == "Page.javascriptDialogOpening":
            # A blocking alert or confirm would stall every evaluation: answer it at once.
            self.post(
                "Page.handleJavaScriptDialog",
                {"accept": False},
                message.get("sessionId"),
            )
        with self.lock:
            if "id" in message:
                self.answers[message["id"]] = message
            else:
                self.events.append(message)
            self.lock.notify_all()

    def post(self, method, params=None, session=None):
        """Writes one command; answers its id."""
        with self.lock:
            self.next_id += 1
            ident = self.next_id
        message = {"id": ident, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        with self.write_lock:
            view = memoryview(data)
            while view:
                written = os.write(self.out, view)
                view = view[written:]
        return ident

    def send(self, method, params=None, session=None, timeout=30.0):
        ident = self.post(method, params, session)
        deadline = time.monotonic() + timeout
        with self.lock:
            while ident not in self.answers:
                if self.closed:
                    raise CdpError(f"{method}: {self.closed}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CdpError(f"{method}: no answer within {timeout:.0f} s")
                self.lock.wait(left)
            answer = self.answers.pop(ident)
        if "error" in answer:
            raise CdpError(f"{method}: {answer['error'].get('message')} {answer['error'].get('data', '')}".strip())
        return answer.get("result", {})

    def events_of(self, method, session=None):
        with self.lock:
            return [
                e for e in self.events
                if e.get("method") == method and (session is None or e.get("sessionId") == session)
            ]

    def wait_event(self, method, session, since, timeout):
        """The first `method` event of `session` at or after index `since` of the event log."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                for event in self.events[since:]:
                    if event.get("method") == method and event.get("sessionId") == session:
                        return event
                if self.closed:
                    raise CdpError(f"waiting for {method}: {self.closed}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Failure(f"no {method} within {timeout:.0f} s")
                self.lock.wait(left)

    def sessions(self):
        """Every session that sent an event, in order of appearance."""
        with self.lock:
            seen = {}
            for event in self.events:
                if event.get("sessionId"):
                    seen.setdefault(event["sessionId"], None)
            return list(seen)

    def event_count(self):
        with self.lock:
            return len(self.events)

    def stop(self):
        process = getattr(self, "process", None)
        if process is not None and process.poll() is None:
            for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    process.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        # Helpers left in the group (a zygote) go too.
        if process is not None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for fd in (getattr(self, "out", None), getattr(self, "inp", None)):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        stderr = getattr(self, "stderr", None)
        if stderr is not None:
            stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def log_tail(self, lines=15):
        try:
            with open(os.path.join(self.profile, "chromium.log"), "rb") as f:
                return f.read().decode(errors="replace").splitlines()[-lines:]
        except OSError:
            return []


class Page:
    def __init__(self, browser, session, timeout):
        self.browser = browser
        self.session = session
        self.timeout = timeout

    def send(self, method, params=None):
        return self.browser.send(method, params, self.session)

    def evaluate(self, expression):
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise Failure(f"evaluating {expression[:80]!r}: {text}")
        return result.get("result", {}).get("value")

    def wait_for(self, what, expression):
        """Polls `expression` every 100 ms until it is truthy; answers its value."""
        deadline = time.monotonic() + self.timeout
        last = None
        while True:
            check_page_errors(self.browser, self.session)
            last = self.evaluate(expression)
            if last:
                return last
            if time.monotonic() >= deadline:
                raise Failure(f"timed out after {self.timeout:.0f} s waiting for {what}")
            time.sleep(POLL)

    def click(self, selector):
        """A real mouse click at the centre of the element."""
        box = self.evaluate(
            f"""(() => {{
                const el = document.querySelector({json.dumps(selector)});
                if (!el) return null;
                el.scrollIntoView({{block: "center", inline: "center"}});
                const r = el.getBoundingClientRect();
                return {{x: r.left + r.width / 2, y: r.top + r.height / 2, w: r.width, h: r.height}};
            }})()"""
        )
        if not box or box["w"] <= 0 or box["h"] <= 0:
            raise Failure(f"{selector} is not on the page to click")
        point = {"x": box["x"], "y": box["y"]}
        self.send("Input.dispatchMouseEvent", {"type": "mouseMoved", **point})
        self.send(
            "Input.dispatchMouseEvent",
            {"type": "mousePressed", "button": "left", "buttons": 1, "clickCount": 1, **point},
        )
        self.send(
            "Input.dispatchMouseEvent",
            {"type": "mouseReleased", "button": "left", "buttons": 0, "clickCount": 1, **point},
        )


def describe_remote(obj):
    if "value" in obj:
        value = obj["value"]
        return value if isinstance(value, str) else json.dumps(value)
    return obj.get("description") or obj.get("unserializableValue") or obj.get("type", "")


def page_errors(browser, session):
    """(console errors, fatal problems) seen so far on the page."""
    console, fatal = [], []
    for event in browser.events_of("Runtime.consoleAPICalled", session):
        params = event["params"]
        if params.get("type") == "error":
            console.append("console.error: " + " ".join(describe_remote(a) for a in params.get("args", [])))
    for event in browser.events_of("Runtime.exceptionThrown", session):
        details = event["params"].get("exceptionDetails", {})
        text = details.get("exception", {}).get("description") or details.get("text", "")
        where = f"{details.get('url', '')}:{details.get('lineNumber', 0) + 1}"
        fatal.append(f"exception: {text} at {where}")
    for event in browser.events_of("Log.entryAdded", session):
        entry = event["params"].get("entry", {})
        text = entry.get("text", "")
        if "Content Security Policy" in text or "Content-Security-Policy" in text:
            fatal.append(f"csp: {text}")
        elif entry.get("level") == "error":
            console.append(f"log ({entry.get('source')}): {text} {entry.get('url', '')}".strip())
    return console, fatal


def check_page_errors(browser, session):
    _, fatal = page_errors(browser, session)
    if fatal:
        raise Failure("the page failed: " + " | ".join(fatal))


def open_page(browser, timeout):
    targets = browser.send("Target.getTargets")["targetInfos"]
    pages = [t for t in targets if t.get("type") == "page"]
    if pages:
        target = pages[0]["targetId"]
    else:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    page = Page(browser, session, timeout)
    for domain in ("Page", "Runtime", "Log"):
        page.send(f"{domain}.enable")
    page.send("Emulation.setDeviceMetricsOverride", VIEWPORT)
    return page


def sign_in(page, url, token):
    since = page.browser.event_count()
    navigated = page.send("Page.navigate", {"url": url})
    if navigated.get("errorText"):
        raise Failure(f"navigating to {url}: {navigated['errorText']}")
    page.browser.wait_event("Page.loadEventFired", page.session, since, page.timeout)
    page.wait_for(
        "the token form",
        """(() => {
            const form = document.querySelector('#token-form');
            const input = document.querySelector('#token-input');
            return !!form && !!input && !form.hidden && form.getBoundingClientRect().height > 0;
        })()""",
    )
    page.evaluate("document.querySelector('#token-input').focus()")
    page.send("Input.insertText", {"text": token})
    typed = page.evaluate("document.querySelector('#token-input').value")
    if typed != token:
        raise Failure("the token did not reach #token-input")
    page.click("#token-submit")
    page.wait_for(
        "the pool to render and the event stream to go live",
        """(() => {
            const pool = document.querySelector('#pool');
            const connection = document.querySelector('#connection');
            return !!pool && pool.getAttribute('data-loaded') === 'true'
                && !!connection && connection.textContent.trim() === 'live';
        })()""",
    )
    where = page.evaluate(
        f"""(() => {{
            const token = {json.dumps(token)};
            const inSession = Object.keys(sessionStorage).some((k) => sessionStorage.getItem(k) === token);
            const inLocal = Object.keys(localStorage).some(
                (k) => k.includes(token) || (localStorage.getItem(k) || '').includes(token));
            return {{
                session: inSession,
                local: inLocal,
                url: location.href.includes(token) || decodeURIComponent(location.href).includes(token),
                cookie: document.cookie.includes(token),
            }};
        }})()"""
    )
    if not where["session"]:
        raise Failure("the token is not in sessionStorage")
    for place in ("local", "url", "cookie"):
        if where[place]:
            raise Failure(f"the token leaked into {'localStorage' if place == 'local' else place}")


def read_user_id(timeout):
    ready, _, _ = select.select([sys.stdin], [], [], timeout)
    if not ready:
        raise Failure(f"no user id on stdin within {timeout:.0f} s")
    line = sys.stdin.readline()
    if not line:
        raise Failure("stdin closed before a user id came")
    words = line.split()
    if not words:
        raise Failure("an empty user id came on stdin")
    return words[0], (words[1] if len(words) > 1 else None)


LAYOUT_CHECK = """(() => {
    // Every list of instances open, so their buttons are measured (and photographed) too.
    for (const d of document.querySelectorAll('details')) d.open = true;
    const offenders = [];
    const controls = document.querySelectorAll(
        'button, input:not([type=hidden]), select, textarea, a[href], summary, [role=button]');
    for (const el of controls) {
        const style = getComputedStyle(el);
        if (style.visibility === 'hidden' || style.display === 'none') continue;
        const r = el.getBoundingClientRect();
        if (r.width === 0 && r.height === 0) continue;
        if (r.width + 0.5 < MIN || r.height + 0.5 < MIN) {
            const name = el.tagName.toLowerCase() + (el.id ? '#' + el.id : '')
                + (el.className && typeof el.className === 'string' ? '.' + el.className.trim().split(/\\s+/).join('.') : '');
            const text = (el.textContent || el.value || '').trim().slice(0, 30);
            offenders.push(`${name} "${text}" ${r.width.toFixed(1)}x${r.height.toFixed(1)}`);
        }
    }
    const wide = [];
    for (const el of document.body.querySelectorAll('*')) {
        const r = el.getBoundingClientRect();
        if (r.width > 0 && r.right > WIDTH + 0.5) {
            wide.push(el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + ' right=' + r.right.toFixed(1));
            if (wide.length >= 10) break;
        }
    }
    return {
        scrollWidth: document.documentElement.scrollWidth,
        bodyScrollWidth: document.body.scrollWidth,
        innerWidth,
        offenders,
        wide,
    };
})()""".replace("MIN", str(MIN_TAP)).replace("WIDTH", str(VIEWPORT["width"]))


def check_layout(page):
    # Two frames, so what the last data changed is laid out.
    page.evaluate("new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")
    layout = page.evaluate(LAYOUT_CHECK)
    problems = []
    # A mobile viewport widens to fit content wider than the device (the page is then zoomed
    # out), so a layout viewport wider than the device is horizontal overflow too.
    width = VIEWPORT["width"]
    if layout["innerWidth"] != width or max(layout["scrollWidth"], layout["bodyScrollWidth"]) > layout["innerWidth"]:
        problems.append(
            f"horizontal scroll at {width} px: innerWidth {layout['innerWidth']}, scrollWidth "
            f"{layout['scrollWidth']} (body {layout['bodyScrollWidth']}); wider than {width} px: "
            f"{', '.join(layout['wide']) or 'nothing found'}"
        )
    if layout["offenders"]:
        problems.append(f"tap targets under {MIN_TAP}x{MIN_TAP} px: " + "; ".join(layout["offenders"]))
    if problems:
        raise Failure(" | ".join(problems))


def screenshot(page, path):
    metrics = page.send("Page.getLayoutMetrics")
    size = metrics.get("cssContentSize") or metrics["contentSize"]
    shot = page.send(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {
                "x": 0,
                "y": 0,
                "width": VIEWPORT["width"],
                "height": max(VIEWPORT["height"], int(size["height"] + 0.999)),
                "scale": 1,
            },
        },
    )
    data = base64.b64decode(shot["data"])
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise Failure("the screenshot is not a PNG")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def run(args, browser):
    page = open_page(browser, args.timeout)
    sign_in(page, args.url, args.token)
    check_page_errors(browser, page.session)
    print("READY", flush=True)

    user, kind = read_user_id(args.timeout)
    quoted = json.dumps(user)
    selector = f"'#feed .event[data-user=' + CSS.escape({quoted}) + ']'"
    if kind:
        selector += f" + '[data-kind=' + CSS.escape({json.dumps(kind)}) + ']'"
    page.wait_for(
        f"an event{' ' + kind if kind else ''} of user {user} in the feed",
        f"document.querySelectorAll({selector}).length > 0",
    )
    page.wait_for(
        f"user {user} in the user list",
        f"document.querySelectorAll('#users .user[data-user=' + CSS.escape({quoted}) + ']').length > 0",
    )

    check_layout(page)
    screenshot(page, args.screenshot)
    check_page_errors(browser, page.session)
    summary = page.evaluate(
        """(() => ({
            events: document.querySelectorAll('#feed .event').length,
            tiers: [...document.querySelectorAll('#tiers .tier')].map((t) => t.dataset.tier),
            feed_kinds: [...new Set([...document.querySelectorAll('#feed .event')].map((e) => e.dataset.kind))],
        }))()"""
    )
    return {"ok": True, **summary}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chromium", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--screenshot", required=True)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()

    # A test that gives up sends SIGTERM: clean up as on any other way out.
    def stop(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)

    browser = None
    outcome = None
    try:
        browser = Browser(args.chromium)
        outcome = run(args, browser)
    except (Failure, CdpError, OSError, ValueError) as error:
        outcome = {"ok": False, "error": str(error)}
    except SystemExit as exit_:
        outcome = {"ok": False, "error": f"stopped by a signal (exit {exit_.code})"}
    except Exception as error:  # noqa: BLE001 - reported, never a traceback on stdout
        outcome = {"ok": False, "error": f"{type(error).__name__}: {error}"}
    finally:
        if outcome is not None and not outcome.get("ok") and browser is not None:
            console, fatal = [], []
            for session in browser.sessions():
                more_console, more_fatal = page_errors(browser, session)
                console += more_console
                fatal += more_fatal
            outcome["console_errors"] = fatal + console
            if browser.process.poll() is not None or browser.closed:
                outcome["chromium_log"] = browser.log_tail()
        if browser is not None:
            browser.stop()
    print(json.dumps(outcome), flush=True)
    sys.exit(0 if outcome.get("ok") else 1)


if __name__ == "__main__":
    main()
