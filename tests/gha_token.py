#!/usr/bin/env python3
"""A GitHub Actions OIDC token endpoint stand-in for tokend's workload tests.

In a job with `permissions: id-token: write`, GitHub sets
ACTIONS_ID_TOKEN_REQUEST_URL (with a query already: ?api-version=2.0) and
ACTIONS_ID_TOKEN_REQUEST_TOKEN; a GET of the URL plus `&audience=AUD` with
`Authorization: bearer TOKEN` answers {"value": "<the job's OIDC token>"}.

This one checks the request token and the audience the way GitHub does
(401 without the right bearer token, 400 for an unexpected audience) and
gets the job's token from the test provider's workload issuer
(/__test/mint), which the provider trusts for the jwt-bearer grant.

usage: gha_token.py REQUEST_TOKEN AUDIENCE PROVIDER_ISSUER SUB LOG
Prints one ready line, {"port": N}, on stdout; logs one JSON line per
request (verdict, audience) to LOG.
"""

import http.server
import json
import sys
import urllib.parse
import urllib.request

REQUEST_TOKEN, AUDIENCE, ISSUER, SUB, LOG = sys.argv[1:6]


def log(entry):
    with open(LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


class Handler(http.server.BaseHTTPRequestHandler):
    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)
        audience = (query.get("audience") or [None])[0]
        if url.path != "/idtoken" or query.get("api-version") != ["2.0"]:
            log({"verdict": "not found", "path": self.path})
            return self.answer(404, {"message": "not found"})
        if self.headers.get("Authorization", "") != "bearer " + REQUEST_TOKEN:
            log({"verdict": "unauthorized", "audience": audience})
            return self.answer(401, {"message": "bad request token"})
        if audience != AUDIENCE:
            log({"verdict": "wrong audience", "audience": audience})
            return self.answer(400, {"message": "unexpected audience"})
        mint = ISSUER + "/__test/mint?" + urllib.parse.urlencode(
            {"sub": SUB, "aud": audience}
        )
        with urllib.request.urlopen(mint) as r:
            value = json.load(r)["value"]
        log({"verdict": "ok", "audience": audience})
        return self.answer(200, {"count": 1, "value": value})

    def log_message(self, *_args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(json.dumps({"port": server.server_address[1]}), flush=True)
server.serve_forever()
