"""The HTTP endpoint (wsgiref on a thread of its own): /metrics and /healthz.

/metrics returns the text the last collection rendered (`Exporter.latest.text`, prometheus_client's
exposition of its families); a scrape never starts or waits for a collection.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client.exposition import CONTENT_TYPE_LATEST

from badsum.exporter.collector import Exporter

DEFAULT_LISTEN = "127.0.0.1:9847"
INDEX = b"""<html><head><title>badsum exporter</title></head><body><h1>badsum exporter</h1>
<p><a href="/metrics">/metrics</a> &middot; <a href="/healthz">/healthz</a></p></body></html>
"""


def exposition(exporter: Exporter) -> str:
    """The text format of the latest set (what /metrics serves; `--once` prints it)."""
    return exporter.latest.text.decode()


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` or `[V6]:PORT` -> (host, port); ValueError with a one-line reason."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"--listen takes HOST:PORT, not {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"--listen: {port!r} is not a port number") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"--listen: port {number} is out of range")
    return host, number


def make_app(exporter: Exporter) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == "/metrics":
            body = exporter.latest.text  # one read of the published set; never a collection
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body)))])
            return [body]
        if path == "/healthz":
            ok, why = exporter.health()
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain; charset=utf-8")])
            return [why.encode() + b"\n"]
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [INDEX]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: /metrics and /healthz are served here\n"]

    return app


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a stuck client must not keep the process from exiting


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per scrape would drown the progress lines on stderr


class Endpoint:
    """The server on a thread of its own."""

    def __init__(self, exporter: Exporter, host: str, port: int) -> None:
        cls = _Server6 if ":" in host else _Server
        self.httpd = make_server(host, port, make_app(exporter), server_class=cls, handler_class=_QuietHandler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="badsum-http", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


__all__ = ["DEFAULT_LISTEN", "Endpoint", "exposition", "make_app", "parse_listen"]
