"""A webhook receiver as its own process, for the delivery tests: it checks each delivery's
signature with `standardwebhooks` (through the SDK's `verify_notice`), and appends one JSON
line per request to `--out`: the `webhook-id`, whether the signature verified, the body, and
when it arrived. What it answers is read from `--mode` at every request (a file the test
rewrites): `ok` (204), `slow` (204 after 50 ms), `fail` (503), `redirect` (307 to
`--redirect-to`), `hang` (answers only after 60 s). The secrets (one per line) are read from
`--secrets` at every request too, so the receiver can start before its endpoint exists.

    python -m tests.receiver --port P --secrets FILE --out FILE --mode FILE
"""

from __future__ import annotations

import argparse
import json
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Lock

from ledger.client.webhooks import NoticeRejected, verify_notice


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secrets", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--mode", type=Path, required=True)
    parser.add_argument("--redirect-to", default="http://127.0.0.1:9/")
    args = parser.parse_args()
    lock = Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            received = time.time()
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            mode = args.mode.read_text().strip() if args.mode.exists() else "ok"
            secrets = args.secrets.read_text().split() if args.secrets.exists() else []
            headers = {k.lower(): v for k, v in self.headers.items()}
            verified = False
            for secret in secrets:
                try:
                    verify_notice(secret, body, headers)
                    verified = True
                except NoticeRejected:
                    pass
            line = {
                "id": headers.get("webhook-id"),
                "verified": verified,
                "body": body.decode("utf-8", "replace"),
                "received_at": received,
                "mode": mode,
                "host": headers.get("host"),
                "path": self.path,
            }
            with lock, args.out.open("a") as out:
                out.write(json.dumps(line) + "\n")
                out.flush()
                os.fsync(out.fileno())
            if mode == "hang":
                time.sleep(60)
            if mode == "slow":
                time.sleep(0.05)
            if mode == "redirect":
                self.send_response(307)
                self.send_header("location", args.redirect_to)
            else:
                self.send_response(204 if mode in ("ok", "slow") else 503)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
