"""The README's screenshots: a conversation in the chat client, and the dashboard under load.

Run chat-api tiered over upstash-gateway, so that every section of the dashboard has data, with
the emoji font installed (Debian: fonts-noto-color-emoji), then:

    redis-server --port 6390 --save "" &
    UPSTASH_GATEWAY_TOKEN=screenshot-token-123 upstash-gateway --redis redis://127.0.0.1:6390 \
        --listen 127.0.0.1:8977 &
    CACHE_BACKEND=tiered UPSTASH_REDIS_REST_URL=http://127.0.0.1:8977 \
        UPSTASH_REDIS_REST_TOKEN=screenshot-token-123 RATE_LIMIT=off \
        cargo run -p chat-api -- --chat-addr 127.0.0.1:3977 &   # from an empty directory
    python3 docs/screenshots/scene.py http://127.0.0.1:3977/ docs/screenshots
"""
import os
import random
import sys
import threading
import time
import urllib.parse

sys.path.insert(
    0,
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "crates", "chat-api", "tests", "browser"),
)
from browser_test import Browser, Driver, api

base = sys.argv[1]
out = sys.argv[2]
driver = Driver("chromedriver", os.devnull)
ann = Browser(driver, "ann", 1280, 760)
bob = Browser(driver, "bob", 1280, 1500)
try:
    def register(b, name):
        b.open(base); b.type("#register-name", name); b.click("#register-form button[type=submit]")
        b.wait("live", "return document.querySelector('#connection-status').dataset.state === 'live'")
        return b.js("return localStorage.getItem('chat.token')")
    ta = register(ann, "ann"); tb = register(bob, "bob")
    ann.type("#create-channel-name", "general"); ann.click("#create-channel-form button[type=submit]")
    link = ann.wait("link", "return document.querySelector('#invite-link').dataset.link")
    cid = link.split("=")[-1]
    api(base, "PUT", f"/channels/{cid}/members/me", tb)
    random_ch = api(base, "POST", "/channels", ta, {"name": "random", "kind": "public"})["id"]
    api(base, "PUT", f"/channels/{random_ch}/members/me", tb)
    convo = [
        (ta, "Morning! The cache dashboard is live at /dashboard 🎉"),
        (tb, "Nice. What does the hit ratio look like?"),
        (ta, "99 % on latest pages; older pages are cached too now"),
        (tb, "And if Upstash goes away?"),
        (ta, "The breaker opens, L1 and the database keep serving, and missed invalidations are replayed before L2 is read again."),
        (tb, "👍 shipping it"),
    ]
    ids = []
    for token, text in convo:
        ids.append(api(base, "POST", f"/channels/{cid}/messages", token, {"content": text})["id"])
        time.sleep(0.2)
    api(base, "PUT", f"/channels/{cid}/messages/{ids[0]}/reactions/{urllib.parse.quote('🎉')}", tb)
    api(base, "PUT", f"/channels/{cid}/messages/{ids[2]}/reactions/{urllib.parse.quote('👍')}", tb)
    api(base, "PUT", f"/channels/{cid}/messages/{ids[4]}/reactions/{urllib.parse.quote('❤️')}", tb)
    api(base, "POST", f"/channels/{random_ch}/messages", tb, {"content": "lunch?"})
    ann.open(link)
    ann.wait("title", "return document.querySelector('#channel-title').textContent === 'general'")
    ann.wait("msgs", "return document.querySelectorAll('#messages [data-message-id]').length >= 6")
    time.sleep(1)
    ann.screenshot(os.path.join(out, "chat.png"))

    # Load: four readers and a poster, 40 s before the screenshot.
    stop = time.time() + 45
    def reader(token):
        while time.time() < stop:
            try:
                api(base, "GET", f"/channels/{cid}/messages?limit=50", token)
                if random.random() < 0.3:
                    api(base, "GET", "/users/me/channels", token)
            except Exception:
                pass
    def poster():
        i = 0
        while time.time() < stop:
            api(base, "POST", f"/channels/{cid}/messages", random.choice([ta, tb]), {"content": f"load {i}"})
            i += 1; time.sleep(0.25)
    threads = [threading.Thread(target=reader, args=(t,)) for t in (ta, tb, ta, tb)] + [threading.Thread(target=poster)]
    bob.open(base + "dashboard")
    for t in threads: t.start()
    time.sleep(40)
    bob.screenshot(os.path.join(out, "dashboard.png"))
    for t in threads: t.join()
finally:
    ann.quit(); bob.quit(); driver.stop()
