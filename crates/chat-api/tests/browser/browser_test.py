#!/usr/bin/env python3
"""chat-api's pages in a real browser: headless Chromium driven over WebDriver (chromedriver).

Run by `cargo xtask browser`, which starts chat-api (memory cache, fresh SQLite, rate limits off)
and passes its URL. Standard library only: the WebDriver protocol is JSON over HTTP.

What it checks, in two browser sessions as two users:
- both register in the chat client (tokens in the browser's storage), Ann creates a channel and Bob
  joins it through its invite link;
- a message Ann posts appears live in Bob's window, and Bob's reply in Ann's, each exactly once;
- an edit and a reaction by one user show up live for the other;
- the dashboard (a local request, so no token) streams live, and the hit ratio it shows moves when
  the test reads a page many times;
- no Content-Security-Policy violation and no script error in either browser's console;
- screenshots of both pages go to the artefacts directory.
"""

import argparse
import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

DEADLINE = 20.0


class Failure(Exception):
    pass


def check(condition, what):
    if not condition:
        raise Failure(what)
    passed(what)


def passed(what):
    """Reports a step whose waits (which fail on their own) all succeeded."""
    print(f"ok: {what}")


class Browser:
    """One WebDriver session on a shared chromedriver."""

    def __init__(self, driver, name, width=1280, height=860):
        self.driver = driver
        self.name = name
        options = {
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                f"--window-size={width},{height}",
            ]
        }
        if os.environ.get("CHROMIUM"):
            options["binary"] = os.environ["CHROMIUM"]
        caps = {
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:loggingPrefs": {"browser": "ALL"},
                    "goog:chromeOptions": options,
                }
            }
        }
        self.session = driver.request("POST", "/session", caps)["value"]["sessionId"]

    def call(self, method, path, body=None):
        return self.driver.request(method, f"/session/{self.session}{path}", body)["value"]

    def open(self, url):
        self.call("POST", "/url", {"url": url})

    def js(self, script, *args):
        return self.call("POST", "/execute/sync", {"script": script, "args": list(args)})

    def element(self, css):
        found = self.call("POST", "/element", {"using": "css selector", "value": css})
        return next(iter(found.values()))

    def click(self, css):
        self.call("POST", f"/element/{self.element(css)}/click", {})

    def type(self, css, text):
        self.call("POST", f"/element/{self.element(css)}/value", {"text": text})

    def type_active(self, text):
        """Types into the focused element (`\ue007` is Enter)."""
        active = next(iter(self.call("GET", "/element/active").values()))
        self.call("POST", f"/element/{active}/value", {"text": text})

    def wait(self, what, script, *args, timeout=DEADLINE):
        """Polls `script` until it returns something truthy; fails with `what` otherwise."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            value = self.js(script, *args)
            if value:
                return value
            time.sleep(0.1)
        raise Failure(f"{self.name}: timed out waiting for {what}")

    def texts(self):
        return self.js(
            "return [...document.querySelectorAll('#messages .message-content')]"
            ".map(e => e.textContent)"
        )

    def screenshot(self, path):
        with open(path, "wb") as f:
            f.write(base64.b64decode(self.call("GET", "/screenshot")))
        print(f"screenshot: {path}")

    def console_problems(self):
        """Console entries that mean the page is broken: CSP violations and script errors."""
        entries = self.call("POST", "/log", {"type": "browser"})
        problems = []
        for entry in entries:
            message = entry.get("message", "")
            if "Content Security Policy" in message or "Content-Security-Policy" in message:
                problems.append(message)
            elif entry.get("level") == "SEVERE" and "Uncaught" in message:
                problems.append(message)
        return problems

    def quit(self):
        try:
            self.driver.request("DELETE", f"/session/{self.session}")
        except Exception:  # noqa: BLE001 - best effort at the end
            pass


class Driver:
    """A chromedriver process on a free port."""

    def __init__(self, binary, log_path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.process = subprocess.Popen(
            [binary, f"--port={self.port}", f"--log-path={log_path}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        end = time.monotonic() + DEADLINE
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > end:
                    raise Failure("chromedriver did not start")
                time.sleep(0.1)

    def request(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as err:
            raise Failure(f"webdriver {method} {path}: {err.read().decode(errors='replace')}")

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def api(base, method, path, token=None, body=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        base + "api/v1" + path,
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers=headers,
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read()
        return json.loads(text) if text else None


def register(browser, base, name):
    browser.open(base)
    browser.type("#register-name", name)
    browser.click("#register-form button[type=submit]")
    browser.wait(
        f"{name}'s live connection",
        "return document.querySelector('#connection-status').dataset.state === 'live'",
    )
    token = browser.js("return localStorage.getItem('chat.token')")
    check(bool(token), f"{name}'s token is kept in the browser's storage")
    return token


def post(browser, text):
    browser.type("#composer-input", text)
    browser.click("#composer button[type=submit]")


def chat(base, ann, bob):
    suffix = str(int(time.time() * 1000) % 10_000_000)
    register(ann, base, f"ann{suffix}")
    register(bob, base, f"bob{suffix}")

    ann.type("#create-channel-name", "general")
    ann.click("#create-channel-form button[type=submit]")
    link = ann.wait(
        "the invite link", "return document.querySelector('#invite-link').dataset.link"
    )
    bob.open(link)
    bob.wait("the join preview", "return !document.querySelector('#join-preview').hidden")
    bob.click("#join-button")
    bob.wait(
        "the channel to open",
        "return document.querySelector('#channel-title').textContent === 'general'",
    )
    passed("Bob joined Ann's channel through its invite link")

    post(ann, "hello from ann")
    bob.wait(
        "Ann's message in Bob's window",
        "return [...document.querySelectorAll('#messages .message-content')]"
        ".some(e => e.textContent === 'hello from ann')",
    )
    post(bob, "hi ann, bob here")
    ann.wait(
        "Bob's reply in Ann's window",
        "return [...document.querySelectorAll('#messages .message-content')]"
        ".some(e => e.textContent === 'hi ann, bob here')",
    )
    # The author's own post comes back on the WebSocket too: still once.
    time.sleep(0.5)
    for browser in (ann, bob):
        texts = browser.texts()
        check(
            texts.count("hello from ann") == 1 and texts.count("hi ann, bob here") == 1,
            f"{browser.name} shows each message once, live: {texts}",
        )

    # Bob reacts to Ann's message; Ann edits it. Each sees the other's change live.
    mid = ann.js(
        "return [...document.querySelectorAll('#messages [data-message-id]')]"
        ".find(e => e.querySelector('.message-content').textContent === 'hello from ann')"
        ".dataset.messageId"
    )
    bob.click(f'[data-message-id="{mid}"] button[data-action="react"]')
    ann.wait(
        "Bob's reaction in Ann's window",
        "const m = document.querySelector(`[data-message-id='${arguments[0]}'] .reactions`);"
        "return m && /1/.test(m.textContent)",
        mid,
    )
    passed("a reaction shows up live")
    ann.click(f'[data-message-id="{mid}"] button[data-action="edit"]')
    ann.js("document.activeElement.select && document.activeElement.select()")
    ann.type_active("hello from ann (edited)\ue007")
    bob.wait(
        "Ann's edit in Bob's window",
        "const m = document.querySelector(`[data-message-id='${arguments[0]}'] .message-content`);"
        "return m && m.textContent === 'hello from ann (edited)'",
        mid,
    )
    passed("an edit shows up live")
    return ann.js("return localStorage.getItem('chat.token')"), link.split("=")[-1]


def dashboard(base, browser, token, channel):
    browser.open(base + "dashboard")
    browser.wait(
        "the dashboard's live stream",
        "return document.querySelector('#status').dataset.state === 'live'",
    )
    # Idle: nothing read through the cache in the window, so no ratio yet (or an old one).
    before = browser.js("return document.querySelector('#hit-ratio').dataset.value")
    # Read one page many times: one load, the rest hits.
    for _ in range(300):
        api(base, "GET", f"/channels/{channel}/messages", token)
    value = browser.wait(
        "the hit ratio to rise under load",
        "const v = document.querySelector('#hit-ratio').dataset.value;"
        "return v !== '' && Number(v) > 0.9 && v",
    )
    check(value != before, f"the dashboard's hit ratio moved with the load: {before!r} -> {value}")
    shown = browser.js("return document.querySelector('#hit-ratio').textContent")
    check("%" in shown, f"the hit ratio is shown as a percentage: {shown!r}")
    time.sleep(1.0)  # let a chart or two draw
    return value


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", required=True, help="chat-api's URL, ending in /")
    parser.add_argument("--chromedriver", default="chromedriver")
    parser.add_argument("--artifacts", required=True)
    args = parser.parse_args()
    os.makedirs(args.artifacts, exist_ok=True)

    with urllib.request.urlopen(args.base, timeout=10) as response:
        csp = response.headers.get("content-security-policy", "")
    check("script-src 'self'" in csp and "unsafe" not in csp, f"the page has a strict CSP: {csp}")

    driver = Driver(args.chromedriver, os.path.join(args.artifacts, "chromedriver.log"))
    browsers = []
    try:
        ann = Browser(driver, "ann")
        browsers.append(ann)
        bob = Browser(driver, "bob")
        browsers.append(bob)
        token, channel = chat(args.base, ann, bob)
        ann.screenshot(os.path.join(args.artifacts, "chat-ann.png"))
        bob.screenshot(os.path.join(args.artifacts, "chat-bob.png"))
        dashboard(args.base, bob, token, channel)
        bob.screenshot(os.path.join(args.artifacts, "dashboard.png"))
        for browser in browsers:
            problems = browser.console_problems()
            check(not problems, f"{browser.name}'s console has no CSP violation or error: {problems}")
    except Failure as failure:
        for browser in browsers:
            try:
                browser.screenshot(os.path.join(args.artifacts, f"failed-{browser.name}.png"))
                print(f"{browser.name}'s console: {browser.console_problems()}", file=sys.stderr)
            except Exception:  # noqa: BLE001 - the failure below is what matters
                pass
        print(f"FAILED: {failure}", file=sys.stderr)
        return 1
    finally:
        for browser in browsers:
            browser.quit()
        driver.stop()
    print("browser test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
