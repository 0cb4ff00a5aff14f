#!/usr/bin/env python3
"""A Kubernetes API server stand-in for tokend's kubectl test.

An HTTPS server on 127.0.0.1 (kubectl runs exec credential plugins only for
TLS servers) that authenticates every request the way an API server started
with --oidc-issuer-url / --oidc-client-id does: the Bearer token must be an
ID token signed RS256 by a key in the issuer's JWKS (fetched from discovery's
jwks_uri), with iss equal to the issuer, aud containing the client id, and
exp in the future. Python's standard library has no RSA, so the PKCS#1 v1.5
check is done by hand (a modular exponentiation and a comparison).

It answers GET /version and GET /api/v1/namespaces/default/pods (an empty
PodList); anything unauthenticated gets 401 with a Status object.

usage: kube_api.py CERT KEY ISSUER CLIENT_ID LOG
Prints one ready line, {"port": N}, on stdout; logs one JSON line per
request (path, verdict, the token's sub) to LOG.
"""

import base64
import hashlib
import http.server
import json
import ssl
import sys
import time
import urllib.request

CERT, KEY, ISSUER, CLIENT_ID, LOG = sys.argv[1:6]

# DER prefix of a SHA-256 DigestInfo (RFC 8017 section 9.2).
SHA256_PREFIX = bytes.fromhex("3031300d060960864801650304020105000420")


def b64d(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def jwks():
    with urllib.request.urlopen(ISSUER + "/.well-known/openid-configuration") as r:
        uri = json.load(r)["jwks_uri"]
    with urllib.request.urlopen(uri) as r:
        return json.load(r)


def verify(token):
    """The token's claims if it is a valid ID token for CLIENT_ID, else why not."""
    try:
        h, p, s = token.split(".")
        header, claims = json.loads(b64d(h)), json.loads(b64d(p))
    except Exception as e:  # noqa: BLE001
        return None, f"not a JWT: {e}"
    if header.get("alg") != "RS256":
        return None, f"alg {header.get('alg')} is not RS256"
    keys = [k for k in jwks()["keys"] if k.get("kty") == "RSA" and k.get("kid") == header.get("kid")]
    if not keys:
        return None, "no such key in the issuer's JWKS"
    n = int.from_bytes(b64d(keys[0]["n"]), "big")
    e = int.from_bytes(b64d(keys[0]["e"]), "big")
    size = (n.bit_length() + 7) // 8
    em = pow(int.from_bytes(b64d(s), "big"), e, n).to_bytes(size, "big")
    digest = hashlib.sha256(f"{h}.{p}".encode()).digest()
    want = b"\x00\x01" + b"\xff" * (size - 3 - len(SHA256_PREFIX) - len(digest)) + b"\x00" + SHA256_PREFIX + digest
    if em != want:
        return None, "bad signature"
    if claims.get("iss") != ISSUER:
        return None, "wrong iss"
    aud = claims.get("aud")
    if CLIENT_ID not in (aud if isinstance(aud, list) else [aud]):
        return None, "wrong aud"
    if claims.get("exp", 0) <= time.time():
        return None, "expired"
    return claims, "ok"


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        auth = self.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        claims, verdict = verify(token) if token else (None, "no bearer token")
        with open(LOG, "a") as f:
            f.write(json.dumps({"path": self.path, "verdict": verdict, "token": token,
                                "sub": (claims or {}).get("sub")}) + "\n")
        if claims is None:
            return self.send(401, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                   "message": f"Unauthorized: {verdict}", "reason": "Unauthorized", "code": 401})
        path = self.path.split("?")[0]
        if path == "/version":
            return self.send(200, {"major": "1", "minor": "32", "gitVersion": "v1.32.0-standin",
                                   "platform": "linux/amd64"})
        if path == "/api/v1/namespaces/default/pods":
            return self.send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": []})
        return self.send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                               "message": "not found", "reason": "NotFound", "code": 404})


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(CERT, KEY)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print(json.dumps({"port": server.server_address[1]}), flush=True)
server.serve_forever()
