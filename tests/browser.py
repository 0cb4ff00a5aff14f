#!/usr/bin/env python3
"""A scripted "browser" for tokend's end-to-end tests (Python 3 stdlib only).

tokend opens the authorization URL by running `$BROWSER URL`. This script
plays the user in front of oidc-provider's development interactions: it keeps
a cookie jar, follows redirects by hand, fills the login form (any login is
accepted), submits the consent form, and finally GETs the loopback callback
`http://127.0.0.1:PORT/...?code=...&state=...&iss=...` on which the daemon
(or client) listens.

Usage:
    browser.py URL                                 authorization-code flow
    browser.py --device VERIFICATION_URI USER_CODE approve a device-flow code

Like xdg-open, `browser.py URL` returns at once: it records the launch, forks
a detached worker that does the clicking, and exits 0. The worker exits by
itself within 30 s. `--device` runs in the foreground (the caller waits) and
exits 0 on success. BROWSER_FOREGROUND=1 makes the URL mode synchronous too.

Environment:
    BROWSER_MODE        unset/approve: log in and consent
                        deny:        press the abort link (callback gets error=access_denied)
                        forge-state: rewrite `state` in the final callback
                        forge-iss:   rewrite `iss` to http://evil.example
                        forge-first: before the real callback, send forged ones
                                     (wrong state; error=access_denied without
                                     and with a wrong state; a wrong path)
                        ignore:      only record the launch
    BROWSER_LOG         append a log of what was done to this file
    BROWSER_COUNT_FILE  append one line per launch to this file: the URL, or
                        for tokend's one-time loopback start link
                        (http://127.0.0.1:PORT/start/...) where it redirects
    BROWSER_ARGV_FILE   append the launch's argv to this file (one line, NUL
                        between arguments): what other users could read in
                        /proc/PID/cmdline
    BROWSER_LOGIN       the login to use (default: tester)
    BROWSER_FOREGROUND  1: do the work before returning (exit code = outcome)

Only http://127.0.0.1 URLs are ever fetched: a redirect to another host is
refused and logged.
"""

import html.parser
import http.cookiejar
import os
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

DEADLINE_SECS = 30
HTTP_TIMEOUT = 10
MAX_STEPS = 25
ALLOWED_HOST = "127.0.0.1"


def log(msg):
    path = os.environ.get("BROWSER_LOG")
    line = "%s [browser pid %d] %s\n" % (time.strftime("%H:%M:%S"), os.getpid(), msg)
    if path:
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(line)
        except OSError:
            pass
    if os.environ.get("BROWSER_STDERR") == "1":
        try:
            sys.stderr.write(line)
        except (OSError, ValueError):
            pass


def record_argv(argv):
    path = os.environ.get("BROWSER_ARGV_FILE")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, ("\0".join(argv) + "\n").encode())
        finally:
            os.close(fd)


def resolve_start(url):
    """tokend opens a one-time loopback link that redirects to the provider:
    follow that one hop now (it works once), so the launch is recorded with
    the authorization URL and the worker starts at the provider."""
    u = urllib.parse.urlsplit(url)
    if u.scheme != "http" or u.hostname != ALLOWED_HOST or not u.path.startswith("/start/"):
        return url
    status, location, _ = Browser().request(url)
    if status not in (302, 303) or not location:
        raise Fail("the start link answered %d without a redirect" % status)
    return urllib.parse.urljoin(url, location)


def record_launch(what):
    path = os.environ.get("BROWSER_COUNT_FILE")
    if path:
        # One short O_APPEND write per launch: atomic even with concurrent launches.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, ("%d %s\n" % (os.getpid(), what)).encode())
        finally:
            os.close(fd)


class Fail(Exception):
    pass


# ------------------------------------------------------------------ HTML forms


class FormParser(html.parser.HTMLParser):
    """Collects <form>s (action, method, id, fields) and <a href>s."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.forms = []
        self.links = []
        self._form = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self._form = {
                "action": a.get("action") or "",
                "method": (a.get("method") or "get").lower(),
                "id": a.get("id"),
                "fields": [],
            }
            self.forms.append(self._form)
        elif tag == "input":
            form = self._form_for(a)
            if form is not None and a.get("name"):
                form["fields"].append((a["name"], a.get("value") or "", (a.get("type") or "text").lower()))
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"])

    def handle_endtag(self, tag):
        if tag == "form":
            self._form = None

    def _form_for(self, attrs):
        if attrs.get("form"):
            for f in self.forms:
                if f["id"] == attrs["form"]:
                    return f
        return self._form


def parse(body):
    p = FormParser()
    p.feed(body)
    p.close()
    return p


# ------------------------------------------------------------------ HTTP


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class Browser:
    def __init__(self):
        self.jar = http.cookiejar.CookieJar()
        self.last_ok = False
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar),
            NoRedirect(),
            urllib.request.ProxyHandler({}),
        )

    def request(self, url, data=None):
        """One request, no redirect following. Returns (status, location, body)."""
        check_url(url)
        body = None
        if data is not None:
            body = urllib.parse.urlencode(data).encode()
        req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
        req.add_header("User-Agent", "tokend-e2e-browser/1")
        log("%s %s" % (req.get_method(), redact(url)))
        try:
            resp = self.opener.open(req, timeout=HTTP_TIMEOUT)
        except urllib.error.HTTPError as e:
            resp = e
        with resp:
            status = resp.status if hasattr(resp, "status") else resp.code
            location = resp.headers.get("Location")
            text = resp.read().decode("utf-8", "replace")
        log("  -> %d%s" % (status, (" Location: " + redact(location)) if location else ""))
        return status, location, text


def check_url(url):
    u = urllib.parse.urlsplit(url)
    if u.scheme != "http" or u.hostname != ALLOWED_HOST:
        raise Fail("refusing to fetch %s: only http://%s is allowed" % (redact(url), ALLOWED_HOST))


def redact(url):
    """Logs may be read by tests; codes are short-lived but keep them short."""
    if not url:
        return url
    u = urllib.parse.urlsplit(url)
    q = urllib.parse.parse_qsl(u.query, keep_blank_values=True)
    q = [(k, (v[:6] + "...") if k in ("code",) and len(v) > 8 else v) for k, v in q]
    return urllib.parse.urlunsplit((u.scheme, u.netloc, u.path, urllib.parse.urlencode(q), u.fragment))


def origin(url):
    u = urllib.parse.urlsplit(url)
    return (u.scheme, u.hostname, u.port)


def forge(url, mode):
    u = urllib.parse.urlsplit(url)
    q = urllib.parse.parse_qsl(u.query, keep_blank_values=True)
    if mode == "forge-state":
        q = [(k, "forged-" + v if k == "state" else v) for k, v in q]
        if not any(k == "state" for k, _ in q):
            q.append(("state", "forged-state"))
    elif mode == "forge-iss":
        q = [(k, "http://evil.example" if k == "iss" else v) for k, v in q]
        if not any(k == "iss" for k, _ in q):
            q.append(("iss", "http://evil.example"))
    return urllib.parse.urlunsplit((u.scheme, u.netloc, u.path, urllib.parse.urlencode(q), u.fragment))


def fields_of(form):
    return [(n, v) for (n, v, t) in form["fields"] if t not in ("submit", "button", "image")]


# ------------------------------------------------------------------ flows


def interact(b, url, body, mode, provider, stop_at_origin=None):
    """Drive the provider's pages starting from a fetched page.

    Follows redirects within the provider; returns the first URL that leaves
    the provider origin (the client's redirect_uri), or None when a page with
    nothing left to do is reached.
    """
    login = os.environ.get("BROWSER_LOGIN", "tester")
    status, location, text = body
    for _ in range(MAX_STEPS):
        if location:
            nxt = urllib.parse.urljoin(url, location)
            if origin(nxt) != provider:
                return nxt
            url = nxt
            status, location, text = b.request(url)
            continue
        if status >= 400:
            raise Fail("provider answered %d at %s: %s" % (status, redact(url), squash(text)))
        page = parse(text)
        form = None
        names = set()
        for f in page.forms:
            names = {n for (n, _, _) in f["fields"]}
            if "login" in names or "prompt" in names or "user_code" in names:
                form = f
                break
        if form is None:
            b.last_ok = status == 200 and "Success" in text
            log("final page (%d): %s" % (status, squash(text)))
            return None
        names = {n for (n, _, _) in form["fields"]}
        action = urllib.parse.urljoin(url, form["action"]) if form["action"] else url
        data = fields_of(form)
        if mode == "deny" and ("login" in names or "prompt" in names):
            abort = [h for h in page.links if "/abort" in h]
            if not abort:
                raise Fail("deny: no abort link on the interaction page")
            url = urllib.parse.urljoin(url, abort[0])
            log("deny: pressing abort")
            status, location, text = b.request(url)
            continue
        if "login" in names:
            data = [(n, login if n == "login" else ("any-password" if n == "password" else v)) for n, v in data]
            log("login form: signing in as %r" % login)
        elif "prompt" in names:
            log("consent form: %s" % dict(data).get("prompt"))
        elif "user_code" in names:
            if mode == "deny" and "confirm" in names:
                data.append(("abort", "yes"))
                data = [(n, v) for n, v in data if n != "confirm"]
                log("device confirm form: aborting")
            else:
                log("device form: %s" % ("confirm" if "confirm" in names else "entering user code"))
        if form["method"] == "post":
            status, location, text = b.request(action, data)
        else:
            sep = "&" if "?" in action else "?"
            status, location, text = b.request(action + sep + urllib.parse.urlencode(data))
        url = action
    raise Fail("too many steps")


def squash(text, n=300):
    import re

    t = re.sub(r"<style.*?</style>", "", text, flags=re.S)
    t = re.sub(r"<[^>]+>", " ", t)
    t = " ".join(t.split())
    return t[:n]


def authorize(url, mode):
    b = Browser()
    provider = origin(url)
    first = b.request(url)
    callback = interact(b, url, first, mode, provider)
    if callback is None:
        raise Fail("the provider never redirected to the client")
    if mode in ("forge-state", "forge-iss"):
        callback = forge(callback, mode)
        log("%s: callback rewritten" % mode)
    if mode == "forge-first":
        u = urllib.parse.urlsplit(callback)
        # Connections that never finish a request, and garbage, held open
        # while the real callback is sent.
        import socket
        held = []
        for i in range(60):
            c = socket.create_connection((u.hostname, u.port), timeout=5)
            if i % 3 == 1:
                c.sendall(b"GET /callback?state=")
            elif i % 3 == 2:
                c.sendall(b"\x00\xff garbage \r\n\r\n")
            held.append(c)
        log("holding %d idle, half-sent and garbage connections" % len(held))
        for query, path in (
            (urllib.parse.urlencode([("code", "forged"), ("state", "forged-state")]), u.path),
            ("error=access_denied", u.path),
            ("error=access_denied&state=forged-state", u.path),
            (u.query, u.path + "-elsewhere"),
        ):
            fake = urllib.parse.urlunsplit((u.scheme, u.netloc, path, query, ""))
            status, _, _ = b.request(fake)
            log("forged callback answered %d" % status)
    log("callback %s" % redact(callback))
    status, location, text = b.request(callback)
    log("callback answered %d: %s" % (status, squash(text, 200)))
    return 0


def device(verification_uri, user_code, mode):
    b = Browser()
    provider = origin(verification_uri)
    first = b.request(verification_uri)
    # The first page is the user-code input form: put the code in.
    status, location, text = first
    page = parse(text)
    form = next((f for f in page.forms if any(n == "user_code" for (n, _, _) in f["fields"])), None)
    if form is None:
        raise Fail("no user_code form at %s" % verification_uri)
    action = urllib.parse.urljoin(verification_uri, form["action"]) if form["action"] else verification_uri
    data = [(n, user_code if n == "user_code" else v) for n, v in fields_of(form)]
    log("device: submitting user code %s" % user_code)
    nxt = b.request(action, data)
    out = interact(b, action, nxt, mode, provider)
    if out is not None:
        raise Fail("device flow redirected off the provider to %s" % redact(out))
    return 0 if mode == "deny" or b.last_ok else 1


def detach():
    """Fork; the parent returns True (and should exit), the child goes on detached."""
    if os.fork() > 0:
        return True
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if devnull > 2:
        os.close(devnull)
    return False


def main(argv):
    mode = os.environ.get("BROWSER_MODE", "") or "approve"
    if mode not in ("approve", "deny", "forge-state", "forge-iss", "forge-first", "ignore"):
        sys.stderr.write("browser.py: unknown BROWSER_MODE %r\n" % mode)
        return 2

    if len(argv) >= 1 and argv[0] == "--device":
        if len(argv) != 3:
            sys.stderr.write("usage: browser.py --device VERIFICATION_URI USER_CODE\n")
            return 2
        signal.alarm(DEADLINE_SECS)
        log("launch (device) mode=%s uri=%s code=%s" % (mode, argv[1], argv[2]))
        try:
            return device(argv[1], argv[2], mode)
        except Exception as e:  # noqa: BLE001 - report whatever went wrong
            log("device flow failed: %s" % e)
            sys.stderr.write("browser.py: device flow failed: %s\n" % e)
            return 1

    if len(argv) < 1:
        sys.stderr.write("usage: browser.py URL | browser.py --device VERIFICATION_URI USER_CODE\n")
        return 2
    url = argv[-1]
    record_argv(sys.argv)
    try:
        url = resolve_start(url)
    except Exception as e:  # noqa: BLE001 - report whatever went wrong
        log("start link failed: %s" % e)
        record_launch(url)
        return 1
    record_launch(url)
    log("launch mode=%s url=%s" % (mode, redact(url)))
    if mode == "ignore":
        log("ignore: doing nothing")
        return 0
    if os.environ.get("BROWSER_FOREGROUND") != "1" and detach():
        return 0
    signal.alarm(DEADLINE_SECS)
    try:
        rc = authorize(url, mode)
        log("done")
        return rc
    except Exception as e:  # noqa: BLE001 - report whatever went wrong
        log("failed: %s: %s" % (type(e).__name__, e))
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
