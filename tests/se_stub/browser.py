#!/usr/bin/env python3
"""$BROWSER for the Stack Exchange stub (tests/se_stub/server.py).

`browser.py URL` plays the user: GETs the approval page at URL, presses
Approve (POST /oauth/approve), and follows the redirect:

- to a loopback redirect_uri (`http://127.0.0.1:PORT/...?code=...&state=...`):
  GETs it, as a browser would, so the waiting login gets its code;
- to the stub's `/oauth/login_success` (paste mode) or a `#fragment`
  (implicit flow): writes the final URL to $SE_PASTE_FILE instead, which is
  what a user would copy from the address bar.

Like xdg-open it returns at once and does the work in a detached child
(SE_BROWSER_FOREGROUND=1: in the foreground, exit code = outcome).

Environment:
    BROWSER_MODE        approve (default) | deny | ignore
    BROWSER_LOG         append what was done to this file
    BROWSER_COUNT_FILE  append "PID URL" per launch (like tests/browser.py; for
                        tokend's one-time loopback start link, where it leads)
    SE_PASTE_FILE       where the final paste-mode URL goes

Only http://127.0.0.1 and http://localhost are ever fetched.
"""

import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

TIMEOUT = 10
ALLOWED = ("127.0.0.1", "localhost")


def log(msg):
    path = os.environ.get("BROWSER_LOG")
    if path:
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write("%s [se-browser %d] %s\n" % (time.strftime("%H:%M:%S"), os.getpid(), msg))
        except OSError:
            pass


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


OPENER = urllib.request.build_opener(NoRedirect)


def fetch(url, data=None):
    """(status, headers, body) without following redirects."""
    host = urllib.parse.urlsplit(url).hostname
    if host not in ALLOWED:
        raise RuntimeError("refusing to fetch %s" % url)
    req = urllib.request.Request(url, data=data.encode() if data is not None else None)
    try:
        with OPENER.open(req, timeout=TIMEOUT) as r:
            return r.status, r.headers, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode("utf-8", "replace")


def run(url):
    mode = os.environ.get("BROWSER_MODE", "approve")
    if mode == "ignore":
        log("ignoring %s" % url)
        return 0
    status, _, body = fetch(url)
    log("GET approval page: %d" % status)
    if status != 200:
        log("the approval page failed: %s" % body[:300])
        return 1
    action = re.search(r'<form[^>]*action="([^"]+)"', body)
    request = re.search(r'name="request" value="([^"]+)"', body)
    if not action or not request:
        log("no approval form on the page")
        return 1
    target = urllib.parse.urljoin(url, action.group(1))
    decision = "deny" if mode == "deny" else "approve"
    form = urllib.parse.urlencode({"request": request.group(1), "decision": decision})
    status, headers, body = fetch(target, form)
    location = headers.get("Location")
    log("POST %s (%s): %d -> %s" % (target, decision, status, location and location.split("?")[0].split("#")[0]))
    if status not in (301, 302, 303) or not location:
        log("no redirect after approval: %s" % body[:300])
        return 1
    split = urllib.parse.urlsplit(location)
    if split.path.endswith("/oauth/login_success") or split.fragment:
        paste = os.environ.get("SE_PASTE_FILE")
        if not paste:
            log("paste-mode redirect but SE_PASTE_FILE is not set")
            return 1
        tmp = paste + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(location + "\n")
        os.replace(tmp, paste)
        log("wrote the final URL to %s" % paste)
        if split.hostname in ALLOWED and not split.fragment:
            fetch(location)
        return 0
    status, _, body = fetch(location)
    log("GET callback: %d" % status)
    return 0 if status < 400 else 1


def resolve_start(url):
    """tokend opens a one-time loopback link that redirects to the provider:
    follow that one hop (it works once), so the launch is recorded with the
    authorization URL, as tests/browser.py does."""
    split = urllib.parse.urlsplit(url)
    if split.hostname not in ALLOWED or not split.path.startswith("/start/"):
        return url
    status, headers, _ = fetch(url)
    location = headers.get("Location")
    if status not in (302, 303) or not location:
        raise RuntimeError("the start link answered %d without a redirect" % status)
    return urllib.parse.urljoin(url, location)


def record_launch(url):
    path = os.environ.get("BROWSER_COUNT_FILE")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, ("%d %s\n" % (os.getpid(), url)).encode())
        finally:
            os.close(fd)


def main():
    if len(sys.argv) != 2:
        sys.stderr.write("usage: browser.py URL\n")
        return 2
    url = sys.argv[1]
    try:
        url = resolve_start(url)
    except Exception as e:  # noqa: BLE001 - report whatever went wrong
        log("start link failed: %r" % e)
        record_launch(url)
        return 1
    record_launch(url)
    if os.environ.get("SE_BROWSER_FOREGROUND") == "1":
        return run(url)
    if os.fork() != 0:
        return 0
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    try:
        code = run(url)
    except Exception as e:  # a detached worker has nobody else to tell
        log("failed: %r" % e)
        code = 1
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
