#!/usr/bin/env python3
"""A sparse cargo registry with `auth-required = true`, for tokend's
end-to-end tests.

Serves one crate, `tokend-hello` 0.1.0 (built here as a `.crate`), under
/index/ (config.json and the index file) and /dl/ (the download), on
127.0.0.1, and demands a token on every request, config.json included, as
private registries do: `Authorization: Bearer <OAuth access token>` (AUTH=bearer,
the default) or the bare token (AUTH=raw), checked against the test
provider's userinfo endpoint (ISSUER/me). Anything else gets 401 with
`WWW-Authenticate: Cargo login_url=…`.

    cargo_registry.py DIR ISSUER LOG [AUTH]     AUTH: bearer (default) | raw

Prints `{"port": N}` when ready. LOG gets one line per request:
`GET PATH auth=<scheme, raw or -> -> STATUS`.
"""

import gzip
import hashlib
import io
import json
import sys
import tarfile

from test_service import QuietHandler, log_line, serve
from test_service import token_ok as provider_token_ok

DIR, ISSUER, LOG = sys.argv[1], sys.argv[2].rstrip("/"), sys.argv[3]
AUTH = sys.argv[4] if len(sys.argv) > 4 else "bearer"
NAME, VERS = "tokend-hello", "0.1.0"


def log(line):
    log_line(LOG, line)


def make_crate():
    files = {
        "Cargo.toml": f'[package]\nname = "{NAME}"\nversion = "{VERS}"\nedition = "2021"\n',
        "src/lib.rs": "pub fn hello() -> &'static str { \"hello\" }\n",
    }
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for path, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{NAME}-{VERS}/{path}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


CRATE = make_crate()
ENTRY = json.dumps({"name": NAME, "vers": VERS, "deps": [], "cksum": hashlib.sha256(CRATE).hexdigest(),
                    "features": {}, "yanked": False}) + "\n"


class Handler(QuietHandler):

    def send(self, status, body, ctype="application/json", extra=()):
        self.send_response(status)
        for k, v in extra:
            self.send_header(k, v)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def credentials(self):
        """(what to log, token) from the Authorization header."""
        auth = self.headers.get("Authorization")
        if auth is None:
            return "-", None
        scheme, _, value = auth.partition(" ")
        if AUTH == "raw":
            return ("raw", auth) if not value else (scheme, None)
        if scheme != "Bearer":
            return scheme or "raw", None
        return "Bearer", value.strip()

    def do_GET(self):  # noqa: N802 (stdlib name)
        host = self.headers.get("Host") or "127.0.0.1"
        what, token = self.credentials()
        if token is None or not provider_token_ok(ISSUER, token):
            body = json.dumps({"errors": [{"detail": "a token from tokend is required"}]}).encode()
            self.send(401, body, extra=[("WWW-Authenticate", f'Cargo login_url="http://{host}/me"')])
            log(f"GET {self.path} auth={what} -> 401")
            return
        prefix = NAME[:2] + "/" + NAME[2:4] + "/"
        if self.path == "/index/config.json":
            cfg = {"dl": f"http://{host}/dl/{{crate}}/{{version}}", "api": f"http://{host}",
                   "auth-required": True}
            status, body, ctype = 200, json.dumps(cfg).encode(), "application/json"
        elif self.path == "/index/" + prefix + NAME:
            status, body, ctype = 200, ENTRY.encode(), "text/plain"
        elif self.path == f"/dl/{NAME}/{VERS}":
            status, body, ctype = 200, CRATE, "application/octet-stream"
        else:
            status, body, ctype = 404, b"not found\n", "text/plain"
        self.send(status, body, ctype)
        log(f"GET {self.path} auth={what} -> {status}")


if __name__ == "__main__":
    serve(Handler)
