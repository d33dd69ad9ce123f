#!/usr/bin/env python3
"""spotpool's warm responder: what answers the load balancer on a spare.

A spare sits registered in its own target group behind a warm rule before any
user claims it, so the load balancer checks its health long before a user's
container exists. This server answers those checks on the container's port:

  GET or HEAD on the health check path   200, body "warm"
  anything else (any path, any method)   503, Retry-After: 5, body "starting"

A request that reaches it on a user's route arrived in the moment between the
claim's route switch and the user's container taking the port: it gets a plain
503 saying that the gateway is starting. The start command
(scripts/instance/start-container.sh) stops it (systemctl stop
spotpool-warm.service) just before the container binds the port.

Settings, from the arguments or else the environment (the unit's
EnvironmentFile): --port / SPOTPOOL_WARM_PORT, --health-path /
SPOTPOOL_WARM_HEALTH_PATH (default /healthz), --bind / SPOTPOOL_WARM_BIND
(default 0.0.0.0). Python 3 standard library only; SIGTERM and SIGINT stop it
at once with exit status 0. It logs nothing per request.
"""

import argparse
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STARTING = (
    b"starting: this gateway is starting on a fresh instance; "
    b"try again in a few seconds\n"
)
WARM = b"warm\n"
# Most request body bytes read (and dropped) before answering, and the seconds
# a connection may stay idle.
MAX_BODY = 65536
TIMEOUT = 10


def settings(argv):
    parser = argparse.ArgumentParser(description="spotpool's warm responder")
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("SPOTPOOL_WARM_PORT", "0"))
    )
    parser.add_argument(
        "--health-path", default=os.environ.get("SPOTPOOL_WARM_HEALTH_PATH", "/healthz")
    )
    parser.add_argument("--bind", default=os.environ.get("SPOTPOOL_WARM_BIND", "0.0.0.0"))
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65535:
        parser.error("--port (or SPOTPOOL_WARM_PORT) must be a port number from 1 to 65535")
    if not args.health_path.startswith("/"):
        parser.error("--health-path (or SPOTPOOL_WARM_HEALTH_PATH) must start with /")
    return args


def handler(health_path):
    # The health path as the load balancer sends it; without a query of its
    # own, a query string on the request does not matter.
    bare = "?" not in health_path

    class Handler(BaseHTTPRequestHandler):
        server_version = "spotpool-warm"
        sys_version = ""
        timeout = TIMEOUT

        def is_health_check(self):
            path = self.path.split("?", 1)[0] if bare else self.path
            return path == health_path

        def answer(self, code, body, head=False):
            self.drain()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            if code == 503:
                self.send_header("Retry-After", "5")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            if not head:
                self.wfile.write(body)

        def drain(self):
            # A request body left unread would reset the connection before the
            # client reads the answer.
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = 0
            if 0 < length <= MAX_BODY:
                self.rfile.read(length)

        def do_GET(self):
            if self.is_health_check():
                self.answer(200, WARM)
            else:
                self.answer(503, STARTING)

        def do_HEAD(self):
            code = 200 if self.is_health_check() else 503
            self.answer(code, WARM if code == 200 else STARTING, head=True)

        def starting(self):
            self.answer(503, STARTING)

        def __getattr__(self, name):
            # Every other method (POST, PUT, DELETE, OPTIONS, ...): 503.
            if name.startswith("do_"):
                return self.starting
            raise AttributeError(name)

        def log_message(self, format, *args):
            pass

    return Handler


def main(argv):
    args = settings(argv)
    server = ThreadingHTTPServer((args.bind, args.port), handler(args.health_path))
    server.daemon_threads = True

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(
        f"spotpool warm responder on {args.bind}:{args.port}, health {args.health_path}",
        flush=True,
    )
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
