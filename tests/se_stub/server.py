#!/usr/bin/env python3
"""A Stack Exchange / Stack Overflow for Teams stand-in for tokend's tests.

Python 3 stdlib only. It follows the documented behaviour of
https://api.stackexchange.com/docs/authentication (explicit and implicit
flows, `/oauth/access_token` and `/oauth/access_token/json`, `no_expiry`, no
refresh tokens ever), the PKCE extension Stack Apps and Teams Enterprise
added, and the API's `/2.3/me` and `/2.3/access-tokens/{tokens}/invalidate`
with their error shape. Teams serves the same API under `/api/2.3`.

Usage: server.py   (PORT=0 picks a free port; prints one JSON line
`{"base": "http://127.0.0.1:NNNN", "port": NNNN}` on stdout when ready)

Environment:
    PORT               port to listen on (default 0: random)
    SE_KEY             the app's API key (default test-key)
    SE_CLIENT_ID       if set, the only client_id accepted
    SE_CLIENT_SECRET   if set, the token call must carry it unless PKCE was used
    SE_OAUTH_DOMAIN    the app's registered OAuth domain (default 127.0.0.1):
                       redirect_uri must be on it or a subdomain of it;
                       this server's own /oauth/login_success is always allowed
    SE_EXPIRES         lifetime of tokens from the code flow (default 86399)
    SE_DEBUG=1         log every request on stderr

Endpoints:
    GET  /oauth                      approval page (explicit flow)
    GET  /oauth/dialog               approval page (implicit flow)
    POST /oauth/approve              the approval form: decision=approve|deny
    POST /oauth/access_token[/json]  code exchange (form or JSON answer)
    GET  /oauth/login_success        the page desktop apps read the URL of
    GET  [/api]/2.3/me               the token's user
    GET  [/api]/2.3/access-tokens/{tokens}/invalidate
    GET  /__test/stats               counters (token_calls, invalidations, ...)
    POST /__test/reset               zero the counters
"""

import base64
import hashlib
import html
import json
import os
import secrets
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEY = os.environ.get("SE_KEY", "test-key")
CLIENT_ID = os.environ.get("SE_CLIENT_ID") or None
CLIENT_SECRET = os.environ.get("SE_CLIENT_SECRET") or None
OAUTH_DOMAIN = os.environ.get("SE_OAUTH_DOMAIN", "127.0.0.1")
EXPIRES = int(os.environ.get("SE_EXPIRES", "86399"))
IMPLICIT_EXPIRES = 86400
CODE_TTL = 600
DEBUG = os.environ.get("SE_DEBUG") == "1"

LOCK = threading.Lock()
PENDING = {}  # approval request id -> the authorization request
CODES = {}  # code -> what it was issued for
TOKENS = {}  # access token -> {"scope": [...], "expires_at": float|None, "valid": bool}
STATS = {}


def reset_stats():
    STATS.clear()
    STATS.update(
        {
            "authorizations": 0,
            "approvals": 0,
            "denials": 0,
            "token_calls": 0,
            "token_calls_by_path": {},
            "token_errors": 0,
            "pkce": 0,
            "me_calls": 0,
            "invalidations": 0,
            "invalidated": [],
            "issued": 0,
        }
    )


reset_stats()


def se_token():
    """Tokens and codes look like Stack Exchange's: URL-unsafe characters
    such as `(`, `)` and `*` included, so clients must encode them."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789*("
    return "".join(secrets.choice(alphabet) for _ in range(22)) + "))"


def split_scopes(scope):
    # SE separates scopes with commas; be lenient about spaces like SE.
    return [s for s in scope.replace(" ", ",").split(",") if s]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "se-stub/1"

    def log_message(self, fmt, *args):
        if DEBUG:
            sys.stderr.write("se-stub: %s\n" % (fmt % args))

    # ---------------------------------------------------------------- helpers

    def base(self):
        return "http://127.0.0.1:%d" % self.server.server_address[1]

    def send(self, status, body, ctype, headers=()):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def json(self, status, obj):
        self.send(status, json.dumps(obj), "application/json; charset=utf-8")

    def page(self, status, title, body):
        doc = "<!DOCTYPE html><html><head><title>%s</title></head><body>%s</body></html>" % (
            html.escape(title),
            body,
        )
        self.send(status, doc, "text/html; charset=utf-8")

    def redirect(self, location):
        self.send(302, "", "text/html", [("Location", location)])

    def form(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n).decode("utf-8", "replace") if n else ""
        return dict(urllib.parse.parse_qsl(raw, keep_blank_values=True))

    def query(self):
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query, keep_blank_values=True))

    def route(self):
        return urllib.parse.urlsplit(self.path).path

    # SE's OAuth endpoints answer errors as {"error": {"type", "message"}}.
    def oauth_error(self, kind, message):
        with LOCK:
            STATS["token_errors"] += 1
        self.json(400, {"error": {"type": kind, "message": message}})

    # The API's error wrapper; HTTP 400 whatever the error_id.
    def api_error(self, error_id, name, message):
        self.json(400, {"error_id": error_id, "error_message": message, "error_name": name})

    def redirect_allowed(self, redirect_uri):
        try:
            u = urllib.parse.urlsplit(redirect_uri)
        except ValueError:
            return False
        if redirect_uri.split("?")[0].split("#")[0] == self.base() + "/oauth/login_success":
            return True
        host = (u.hostname or "").lower()
        dom = OAUTH_DOMAIN.lower()
        return u.scheme in ("http", "https") and (host == dom or host.endswith("." + dom))

    # ---------------------------------------------------------------- dispatch

    def do_GET(self):
        path = self.route()
        if path in ("/oauth", "/oauth/dialog"):
            return self.authorize(implicit=path == "/oauth/dialog")
        if path == "/oauth/login_success":
            return self.page(200, "Authorizing application", "<p>Authorizing application&hellip;</p>")
        if path == "/__test/stats":
            with LOCK:
                return self.json(200, STATS)
        for prefix in ("/2.3", "/api/2.3"):
            if path == prefix + "/me":
                return self.me()
            rest = path[len(prefix) :] if path.startswith(prefix + "/access-tokens/") else None
            if rest is not None and rest.endswith("/invalidate"):
                tokens = rest[len("/access-tokens/") : -len("/invalidate")]
                return self.invalidate(tokens)
        self.api_error(404, "no_method", "method not found")

    def do_POST(self):
        path = self.route()
        if path == "/oauth/approve":
            return self.approve()
        if path in ("/oauth/access_token", "/oauth/access_token/json"):
            return self.access_token(as_json=path.endswith("/json"))
        if path == "/__test/reset":
            with LOCK:
                reset_stats()
            return self.json(200, {})
        self.api_error(404, "no_method", "method not found")

    # ---------------------------------------------------------------- OAuth

    def authorize(self, implicit):
        q = self.query()
        client_id = q.get("client_id", "")
        redirect_uri = q.get("redirect_uri", "")
        if not client_id or (CLIENT_ID and client_id != CLIENT_ID):
            return self.page(400, "Error", "<p>Couldn't parse `client_id`</p>")
        if not redirect_uri or not self.redirect_allowed(redirect_uri):
            return self.page(
                400,
                "Error",
                "<p>Cannot return to %s as it is not under the OAuth domain of the application</p>"
                % html.escape(redirect_uri),
            )
        challenge = q.get("code_challenge")
        method = q.get("code_challenge_method", "plain" if challenge else None)
        if challenge and method not in ("S256", "plain"):
            return self.page(400, "Error", "<p>unsupported code_challenge_method</p>")
        rid = secrets.token_urlsafe(12)
        with LOCK:
            STATS["authorizations"] += 1
            PENDING[rid] = {
                "implicit": implicit,
                "client_id": client_id,
                "redirect_uri": redirect_uri,
                "scope": split_scopes(q.get("scope", "")),
                "state": q.get("state"),
                "challenge": challenge,
                "method": method,
            }
        scopes = ", ".join(PENDING[rid]["scope"]) or "(basic access)"
        self.page(
            200,
            "Authorize application",
            '<h1>Authorize application %s</h1><p>It asks for: %s</p>'
            '<form method="post" action="/oauth/approve">'
            '<input type="hidden" name="request" value="%s">'
            '<button type="submit" name="decision" value="approve">Approve</button>'
            '<button type="submit" name="decision" value="deny">Cancel</button>'
            "</form>" % (html.escape(client_id), html.escape(scopes), html.escape(rid)),
        )

    def approve(self):
        f = self.form()
        with LOCK:
            req = PENDING.pop(f.get("request", ""), None)
        if req is None:
            return self.page(400, "Error", "<p>this approval has expired; start again</p>")
        params = []
        if f.get("decision") != "approve":
            with LOCK:
                STATS["denials"] += 1
            params.append(("error", "access_denied"))
            params.append(("error_description", "user denied access"))
        elif req["implicit"]:
            token = self.issue(req["scope"], IMPLICIT_EXPIRES)
            params.append(("access_token", token))
            if "no_expiry" not in req["scope"]:
                params.append(("expires", str(IMPLICIT_EXPIRES)))
        else:
            code = se_token()
            with LOCK:
                CODES[code] = dict(req, issued=time.time())
            params.append(("code", code))
        if req["state"] is not None:
            params.append(("state", req["state"]))
        with LOCK:
            STATS["approvals"] += f.get("decision") == "approve"
        encoded = urllib.parse.urlencode(params)
        if req["implicit"]:
            location = req["redirect_uri"] + "#" + encoded
        else:
            sep = "&" if "?" in req["redirect_uri"] else "?"
            location = req["redirect_uri"] + sep + encoded
        self.redirect(location)

    def issue(self, scope, lifetime):
        token = se_token()
        with LOCK:
            STATS["issued"] += 1
            TOKENS[token] = {
                "scope": scope,
                "expires_at": None if "no_expiry" in scope else time.time() + lifetime,
                "valid": True,
            }
        return token

    def access_token(self, as_json):
        f = self.form()
        with LOCK:
            STATS["token_calls"] += 1
            by = STATS["token_calls_by_path"]
            by[self.route()] = by.get(self.route(), 0) + 1
        code = f.get("code", "")
        client_id = f.get("client_id", "")
        if not client_id:
            return self.oauth_error("invalid_request", "client_id is required")
        with LOCK:
            # A code is good once, used or not.
            grant = CODES.pop(code, None)
        if grant is None or time.time() - grant["issued"] > CODE_TTL:
            return self.oauth_error("invalid_request", "code is invalid or has expired")
        if grant["client_id"] != client_id:
            return self.oauth_error("invalid_request", "code was issued to another client")
        if f.get("redirect_uri", "") != grant["redirect_uri"]:
            return self.oauth_error("invalid_request", "redirect_uri does not match the one the code was issued for")
        if grant["challenge"]:
            verifier = f.get("code_verifier", "")
            if not verifier:
                return self.oauth_error("invalid_request", "code_verifier is required")
            if grant["method"] == "S256":
                digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
                computed = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            else:
                computed = verifier
            if not secrets.compare_digest(computed, grant["challenge"]):
                return self.oauth_error("invalid_request", "code_verifier does not match the code_challenge")
            with LOCK:
                STATS["pkce"] += 1
        elif CLIENT_SECRET is not None and f.get("client_secret") != CLIENT_SECRET:
            return self.oauth_error("invalid_request", "client_secret is invalid")
        if CLIENT_SECRET is not None and "client_secret" in f and f["client_secret"] != CLIENT_SECRET:
            return self.oauth_error("invalid_request", "client_secret is invalid")
        token = self.issue(grant["scope"], EXPIRES)
        fields = [("access_token", token)]
        if "no_expiry" not in grant["scope"]:
            fields.append(("expires", EXPIRES))
        if as_json:
            self.json(200, dict(fields))
        else:
            body = urllib.parse.urlencode([(k, str(v)) for k, v in fields])
            self.send(200, body, "text/plain; charset=utf-8")

    # ---------------------------------------------------------------- API

    def valid(self, token):
        t = TOKENS.get(token)
        return (
            t is not None
            and t["valid"]
            and (t["expires_at"] is None or t["expires_at"] > time.time())
        )

    def me(self):
        q = self.query()
        with LOCK:
            STATS["me_calls"] += 1
        token = q.get("access_token")
        if token is None:
            return self.api_error(403, "access_denied", "this method requires an access_token")
        if q.get("key") != KEY:
            return self.api_error(400, "bad_parameter", "key")
        with LOCK:
            ok = self.valid(token)
        if not ok:
            return self.api_error(403, "access_denied", "access_token is invalid")
        self.json(
            200,
            {
                "items": [{"user_id": 1, "display_name": "tester"}],
                "has_more": False,
                "quota_max": 10000,
                "quota_remaining": 9999,
            },
        )

    def invalidate(self, raw):
        q = self.query()
        if "key" in q and q["key"] != KEY:
            return self.api_error(400, "bad_parameter", "key")
        tokens = [urllib.parse.unquote(t) for t in raw.split(";") if t]
        if not tokens or len(tokens) > 100:
            return self.api_error(400, "bad_parameter", "accessTokens")
        items = []
        with LOCK:
            for t in tokens:
                if t in TOKENS and TOKENS[t]["valid"]:
                    TOKENS[t]["valid"] = False
                    STATS["invalidations"] += 1
                    STATS["invalidated"].append(t)
                    items.append({"access_token": t})
        if not items:
            return self.api_error(403, "access_denied", "access_token is invalid")
        self.json(200, {"items": items, "has_more": False, "quota_max": 10000, "quota_remaining": 9998})


def main():
    port = int(os.environ.get("PORT", "0"))
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    print(json.dumps({"base": "http://127.0.0.1:%d" % port, "port": port}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
