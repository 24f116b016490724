"""The server of ``digitnet serve``: Gunicorn with gevent's worker and a deadline on each request.

Why gevent. Gunicorn's threaded worker reads a request in one of its threads
from the first byte to the last, so a client that sends its request a byte a
second holds a thread for as long as it likes: a few such clients hold them
all and the page stops answering. Gevent's worker gives each connection a
greenlet instead, which waits on a slow client for the price of a few
kilobytes while the process answers everyone else; predictions themselves are
a few milliseconds of NumPy, which a greenlet runs as fast as a thread does.

The deadlines bound what a slow client can hold even so: its request line and
headers must arrive within ``HEADER_SECONDS`` (the gevent worker applies
Gunicorn's keep-alive timeout to reading them, then closes the connection),
and its body and the answer within ``REQUEST_SECONDS`` more, or it is answered
408 and closed. Gunicorn's own error answers (a malformed request line, a
broken chunked body, a timeout) carry the page's security headers and a JSON
``{"error": ...}`` like the app's.
"""

from __future__ import annotations

import json
import socket

import gevent
from gunicorn import util
from gunicorn.app.base import BaseApplication
from gunicorn.workers.ggevent import GeventWorker

from digitnet.web.app import SECURITY_HEADERS

HEADER_SECONDS = (
    5  # to wait for a request's line and headers (on a kept-alive connection, from its last answer)
)
REQUEST_SECONDS = 5  # from the end of the headers to the end of the answer


class TooSlow(BaseException):
    """A request whose body or answer did not get through within ``REQUEST_SECONDS``.

    A BaseException, as gevent's Timeout is: it passes through the app's
    ``except Exception`` and reaches :meth:`Worker.handle_error`.
    """


class Worker(GeventWorker):
    """Gevent's Gunicorn worker with ``REQUEST_SECONDS`` on each request and JSON error pages."""

    def init_process(self):
        util.write_error = write_error  # Gunicorn's error pages, in this worker process
        super().init_process()

    def handle_request(self, listener_name, req, sock, addr):
        with gevent.Timeout(REQUEST_SECONDS, TooSlow(f"the request took over {REQUEST_SECONDS} s to arrive")):
            return super().handle_request(listener_name, req, sock, addr)

    def handle_error(self, req, client, addr, exc):
        if not isinstance(exc, TooSlow):
            return super().handle_error(req, client, addr, exc)
        self.log.warning("Slow request from ip=%s: %s", (addr or ("",))[0], exc)
        try:
            write_error(client, 408, "Request Timeout", f"{exc}: send it in one go")
        except OSError:
            pass


def write_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """Gunicorn's ``util.write_error`` with the page's headers and a JSON body: one answer, then close."""
    body = json.dumps({"error": mesg or reason}).encode()
    head = [
        f"HTTP/1.1 {status_int} {reason}",
        "Connection: close",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in SECURITY_HEADERS.items()),
    ]
    util.write_nonblock(sock, ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)


class Server(BaseApplication):
    """A Gunicorn server: ``workers`` processes of :class:`Worker`, ``connections`` each, serving ``make_app()``.

    Each worker process calls ``make_app()`` (a function returning the WSGI
    app) once gevent has patched it, so the app's locks are gevent's and a
    greenlet waiting for one lets the others run. Gunicorn hands request
    bodies to the app as they arrive (nothing is buffered ahead), so Flask
    refuses a body over ``MAX_BODY`` by its Content-Length with a JSON error.
    ``on_ready(url)`` is called once the socket is bound (``port=0`` picks a
    free port).
    """

    def __init__(
        self,
        make_app,
        host: str = "127.0.0.1",
        port: int = 8000,
        workers: int = 2,
        connections: int = 1000,
        on_ready=None,
    ):
        self.make_app, self.on_ready = make_app, on_ready
        self.options = {
            "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
            "workers": workers,
            "worker_class": f"{__name__}.Worker",
            "worker_connections": connections,
            "keepalive": HEADER_SECONDS,
            "loglevel": "warning",
            "accesslog": None,
            "timeout": 30,
            "graceful_timeout": 3,
            "control_socket_disable": True,
            "when_ready": self._ready,
            "proc_name": "digitnet-serve",
        }
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        return self.make_app()

    def _ready(self, arbiter):
        host, port = arbiter.LISTENERS[0].sock.getsockname()[:2]
        if self.on_ready:
            self.on_ready(f"http://{'[' + host + ']' if ':' in host else host}:{port}/")


def check_address(host: str, port: int) -> None:
    """Raise OSError now if ``host:port`` cannot be bound (the server would retry for seconds)."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
