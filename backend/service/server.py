"""The server process: ``python -m backend serve`` (HTTP API v1, docs/protocol.md).

Options, the handshake line, signals and the parent watch live here; the HTTP front is
backend/service/http.py, the device thread and caches backend/service/jobs.py. Models load
once, on first use, and stay warm.
"""

import ipaddress
import json
import logging
import os
import secrets
import signal
import socket
import sys
import threading
import time

from .. import __version__
from ..engine.request import LIMITS
from ..errors import UserError
from . import protocol
from .http import make_server
from .jobs import ServiceLimits, Worker

logger = logging.getLogger(__name__)

DRAIN_SECONDS = 30.0  # on SIGTERM: how long jobs get to stop and streams to end


def is_loopback(host):
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def watch_parent(pid, stop):
    """Call ``stop`` once process ``pid`` is gone (checked every half second)."""
    def alive():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def loop():
        while alive():
            time.sleep(0.5)
        stop()

    threading.Thread(target=loop, name="onet-parent-watch", daemon=True).start()


def add_arguments(parser):
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    tokens = parser.add_mutually_exclusive_group()
    tokens.add_argument("--token", help="required on every request (default: a random one,"
                        " printed in the handshake)")
    tokens.add_argument("--token-file", help="read the token from this file")
    from ..engine.runtime import add_engine_options

    add_engine_options(parser)
    parser.add_argument("--models", action="append", default=[], metavar="DIR",
                        help="extra folder of .safetensors models (repeatable)")
    parser.add_argument("--parent-pid", type=int, help="exit when this process is gone")
    parser.add_argument("--log-level", default="WARNING",
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="what the server logs on stderr (DEBUG: every HTTP request)")
    for table in (LIMITS, ServiceLimits()):
        for name in table.__dataclass_fields__:
            parser.add_argument("--" + name.replace("_", "-"), type=int,
                                default=getattr(table, name))


def serve(args):
    """Run the server until SIGTERM/SIGINT or the parent process is gone."""
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    if args.token_file:
        try:
            token = open(args.token_file).read().strip()
        except OSError as exc:
            raise UserError(f"cannot read token file {args.token_file}: {exc}") from None
        if not token:
            raise UserError(f"token file {args.token_file} is empty")
    else:
        token = args.token
    if not is_loopback(args.host) and not token:
        raise UserError(f"refusing to listen on {args.host} (not loopback) without --token"
                        " or --token-file: anyone on the network could use this machine")
    token = token or secrets.token_urlsafe(24)
    limits, service_limits = (type(table)(**{name: getattr(args, name)
                                             for name in table.__dataclass_fields__})
                              for table in (LIMITS, ServiceLimits()))
    service = Worker(args.device, limits, service_limits, args.models, args.engine)
    try:
        server = make_server(args.host, args.port, token, service)
    except OSError as exc:
        raise UserError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None

    def stop(*_):
        # Refuse new jobs and cancel the queued and running ones; serve() then waits for
        # the device thread and for every stream's "cancelled" and "end" frames.
        service.shutdown()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.parent_pid:
        watch_parent(args.parent_pid, stop)
    print(json.dumps({"port": server.server_address[1], "token": token,
                      "protocol": protocol.PROTOCOL, "device": str(service.device),
                      "engine": service.engine, "version": __version__, "pid": os.getpid()}), flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        service.shutdown()
        drained = service.drain(DRAIN_SECONDS)
        server.server_close()
    if not drained:
        # A job did not stop in time (one long step of native code): leaving while the
        # device thread runs inside torch would abort at interpreter exit, so exit now.
        logger.warning("a job did not stop within %.0f s; exiting anyway", DRAIN_SECONDS)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
