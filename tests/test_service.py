"""What the test suite's small HTTP services share (tests/git_server.py,
tests/registry_token.py, tests/cargo_registry.py): checking an OAuth access
token with the test provider, and their request logs."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import urllib.error
import urllib.request

_LOCK = threading.Lock()


def token_ok(issuer, token):
    """Whether the provider at ISSUER accepts TOKEN (its userinfo endpoint, ISSUER/me, answers 200)."""
    req = urllib.request.Request(issuer.rstrip("/") + "/me", headers={"Authorization": "Bearer " + token})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def log_line(path, line):
    """Appends LINE to the log at PATH (one line per request, from any thread)."""
    with _LOCK, open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 (keep-alive, as the tools under test use it) without the stdlib's stderr log."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 (stdlib signature)
        pass


def serve(handler, **ready):
    """Serves HANDLER on 127.0.0.1 (a free port) until killed, after printing
    `{"port": N, **ready}` on stdout: the line the test waits for."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    print(json.dumps({"port": srv.server_address[1], **ready}), flush=True)
    srv.serve_forever()
