"""A stand-in Kubernetes API server for `kubectl apply --dry-run=client`, which needs discovery.

It answers discovery for the kinds deploy/kubernetes uses (the built-in ones and the Prometheus
Operator's two CRDs) and 404 NotFound for every object, so kubectl maps each manifest to its
resource, finds nothing live and reports what it would create. It validates nothing itself:
schemas are tested with kubernetes-validate and the vendored CRD schemas. Bound to 127.0.0.1 on a
free port, in a thread, for one test.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERBS = ["get", "list", "create", "update", "patch", "delete"]


def _resource(plural: str, kind: str, namespaced: bool) -> dict:
    return {"name": plural, "singularName": kind.lower(), "namespaced": namespaced, "kind": kind, "verbs": VERBS}


def _group(name: str) -> dict:
    gv = {"groupVersion": f"{name}/v1", "version": "v1"}
    return {"name": name, "versions": [gv], "preferredVersion": gv}


DISCOVERY = {
    "/version": {"major": "1", "minor": "32", "gitVersion": "v1.32.0"},
    "/api": {"kind": "APIVersions", "versions": ["v1"],
             "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group("apps"), _group("monitoring.coreos.com")]},
    "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
        _resource("namespaces", "Namespace", False), _resource("serviceaccounts", "ServiceAccount", True),
        _resource("services", "Service", True)]},
    "/apis/apps/v1": {"kind": "APIResourceList", "groupVersion": "apps/v1",
                      "resources": [_resource("daemonsets", "DaemonSet", True)]},
    "/apis/monitoring.coreos.com/v1": {"kind": "APIResourceList", "groupVersion": "monitoring.coreos.com/v1", "resources": [
        _resource("servicemonitors", "ServiceMonitor", True), _resource("prometheusrules", "PrometheusRule", True)]},
}  # fmt: skip
NOT_FOUND = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
             "message": "the stand-in server holds no objects"}  # fmt: skip


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        body, code = (DISCOVERY[path], 200) if path in DISCOVERY else (NOT_FOUND, 404)
        self.server.requests.append(path)  # type: ignore[attr-defined]
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def fake_apiserver() -> Iterator[tuple[str, list[str]]]:
    """(server URL, paths requested so far); the server stops when the block ends."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, name="fake-apiserver", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.requests  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
