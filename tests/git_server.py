#!/usr/bin/env python3
"""A git smart-HTTP server for tokend's end-to-end tests.

Serves the repositories under ROOT with `git http-backend` (CGI) on
127.0.0.1, clones and pushes, and demands an OAuth access token on every
request, as forges do: `Authorization: Basic` with the token as password
(any user name), or `Authorization: Bearer <token>`. With AUTH=bearer only
Bearer is accepted (a Bearer-only server). The token is checked against the
test provider's userinfo endpoint (ISSUER/me): a token the provider accepts
is good. Anything else gets 401 with `WWW-Authenticate`.

    git_server.py ROOT ISSUER LOG [GIT] [AUTH]    AUTH: any (default) | bearer

Prints `{"port": N}` on stdout when ready. LOG gets one line per request:
`METHOD PATH auth=<scheme or -> [user=<name>] -> STATUS`, and before it, for
a token the provider accepts, `account PATH sub=<the token's account>` (which
login the token came from). Request bodies may
be chunked (git streams a push larger than http.postBuffer that way).
"""

import base64
import binascii
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT, ISSUER, LOG = sys.argv[1], sys.argv[2].rstrip("/"), sys.argv[3]
GIT = sys.argv[4] if len(sys.argv) > 4 else "git"
AUTH = sys.argv[5] if len(sys.argv) > 5 else "any"
LOCK = threading.Lock()


def log(line):
    with LOCK, open(LOG, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def token_sub(token):
    """The account (`sub`) the provider says the token is for, or None."""
    req = urllib.request.Request(ISSUER + "/me", headers={"Authorization": "Bearer " + token})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            if r.status != 200:
                return None
            return str(json.loads(r.read() or b"{}").get("sub") or "?")
    except (urllib.error.URLError, OSError, ValueError):
        return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 (stdlib signature)
        pass

    def deny(self, scheme):
        body = b"an access token is required\n"
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Bearer realm="git"')
        if AUTH != "bearer":
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        log(f"{self.command} {self.path} auth={scheme} -> 401")

    def read_body(self):
        if (self.headers.get("Transfer-Encoding") or "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def credentials(self):
        """(scheme, user, token) from the Authorization header."""
        auth = self.headers.get("Authorization") or ""
        scheme, _, value = auth.partition(" ")
        value = value.strip()
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return "Basic", None, ""
            return "Basic", user, password
        return scheme or "-", None, value

    def handle_any(self):
        body = self.read_body()
        scheme, user, token = self.credentials()
        allowed = ("bearer",) if AUTH == "bearer" else ("bearer", "basic")
        if user is not None:
            scheme = f"{scheme} user={user}"
        sub = token_sub(token) if scheme.split()[0].lower() in allowed else None
        if sub is None:
            self.deny(scheme)
            return
        path, _, query = self.path.partition("?")
        log(f"account {path} sub={sub}")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": ROOT,
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type") or "",
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": "bearer",
            "REMOTE_ADDR": self.client_address[0],
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
        }
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        res = subprocess.run([GIT, "http-backend"], input=body, env=env, capture_output=True, check=False)
        head, _, payload = res.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = res.stdout.partition(b"\n\n")
        status = 200
        headers = []
        for line in head.decode("latin-1").splitlines():
            k, _, v = line.partition(":")
            if k.lower() == "status":
                status = int(v.strip().split()[0])
            elif k:
                headers.append((k.strip(), v.strip()))
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        log(f"{self.command} {self.path} auth={scheme} -> {status}")
        if res.returncode != 0:
            log(f"  http-backend exit {res.returncode}: {res.stderr.decode(errors='replace')}")

    do_GET = handle_any
    do_POST = handle_any


def main():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    print(json.dumps({"port": srv.server_address[1]}), flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
