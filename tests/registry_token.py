#!/usr/bin/env python3
"""The token service of a real OCI registry, for tokend's end-to-end tests.

Debian's `docker-registry` (distribution) runs with `auth: token:` pointing
here, as GitLab's and Harbor's registries do: a client that gets 401 from the
registry asks this service for a registry token with HTTP Basic
`username:<OAuth access token>`. The access token is good when the test
provider accepts it (its userinfo endpoint ISSUER/me answers 200); then the
service grants `pull,push` on every repository asked for. Without
credentials it answers as registries do for anonymous users: a token that
grants `pull` on repositories under `public/` only. Anything else gets 401.

Registry tokens are JWTs signed RS256 with a key made here by the openssl
CLI; its self-signed certificate (DIR/cert.pem) is the registry's
`rootcertbundle`, and each token carries it in `x5c`.

    registry_token.py DIR ISSUER LOG

Prints `{"port": N, "cert": "DIR/cert.pem"}` when ready. LOG gets one line
per request: `GET /token scope=<scope> auth=<scheme or -> [user=<name>] -> STATUS`.
"""

import base64
import binascii
import json
import os
import subprocess
import sys
import time
import urllib.parse

from test_service import QuietHandler, log_line, serve
from test_service import token_ok as provider_token_ok

DIR, ISSUER, LOG = sys.argv[1], sys.argv[2].rstrip("/"), sys.argv[3]
SERVICE = "tokend-test-registry"
TOKEN_ISSUER = "tokend-test-token-service"
KEY = os.path.join(DIR, "key.pem")
CERT = os.path.join(DIR, "cert.pem")


def log(line):
    log_line(LOG, line)


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_key():
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", KEY, "-out", CERT,
         "-days", "2", "-subj", "/CN=tokend test registry tokens"],
        check=True, capture_output=True,
    )
    der = subprocess.run(["openssl", "x509", "-in", CERT, "-outform", "DER"], check=True, capture_output=True)
    return base64.b64encode(der.stdout).decode()


def sign(payload, x5c):
    header = {"typ": "JWT", "alg": "RS256", "x5c": [x5c]}
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(payload).encode())
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", KEY], input=signing_input.encode(),
                         check=True, capture_output=True).stdout
    return signing_input + "." + b64url(sig)


def access(scopes, authenticated):
    """The registry access to grant for `scope` parameters (`repository:NAME:ACTIONS`)."""
    out = []
    for scope in scopes:
        parts = scope.split(":")
        if len(parts) != 3 or parts[0] != "repository":
            continue
        name, wanted = parts[1], parts[2].split(",")
        allowed = ["pull", "push"] if authenticated else (["pull"] if name.startswith("public/") else [])
        actions = [a for a in wanted if a in allowed]
        if actions:
            out.append({"type": "repository", "name": name, "actions": actions})
    return out


class Handler(QuietHandler):
    x5c = ""

    def reply(self, status, body, extra=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        for k, v in extra:
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 (stdlib name)
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        scopes = query.get("scope", [])
        auth = self.headers.get("Authorization") or ""
        scheme, _, value = auth.partition(" ")
        what = f"{self.command} {url.path} scope={' '.join(scopes) or '-'} auth={scheme or '-'}"
        user = None
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                password = ""
            what += f" user={user}"
            if not provider_token_ok(ISSUER, password):
                self.reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": "the access token is not valid"}]},
                           [("WWW-Authenticate", 'Basic realm="tokend-test-registry"')])
                log(f"{what} -> 401")
                return
        elif auth:
            self.reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": "Basic credentials only"}]})
            log(f"{what} -> 401")
            return
        if url.path != "/token":
            self.reply(404, {"errors": [{"code": "NOT_FOUND"}]})
            log(f"{what} -> 404")
            return
        now = int(time.time())
        claims = {
            "iss": TOKEN_ISSUER,
            "sub": user or "",
            "aud": query.get("service", [SERVICE])[0],
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": binascii.hexlify(os.urandom(8)).decode(),
            "access": access(scopes, user is not None),
        }
        token = sign(claims, self.x5c)
        self.reply(200, {"token": token, "access_token": token, "expires_in": 300,
                         "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))})
        log(f"{what} -> 200")


def main():
    Handler.x5c = make_key()
    serve(Handler, cert=CERT, service=SERVICE, issuer=TOKEN_ISSUER)


if __name__ == "__main__":
    main()
