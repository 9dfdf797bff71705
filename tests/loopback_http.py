"""A real HTTP server on 127.0.0.1 for download tests: Range requests, cut connections, error statuses.

Shared by tests/unit/test_download.py, tests/unit/test_cifar.py and tests/rules/test_data_rules.py (``tests/`` is
on ``sys.path`` because pytest imports ``tests/conftest.py`` from it). Put bytes in ``state.files[path]``;
``state.cut_first`` makes the first GET of a path stop halfway, ``state.ignore_range`` answers 200 to Range
requests, ``state.status`` fixes an error status; ``state.requests`` records (path, Range header).
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class ServerState:
    files: dict[str, bytes] = field(default_factory=dict)
    cut_first: set[str] = field(default_factory=set)  # first GET of these paths stops halfway
    ignore_range: set[str] = field(default_factory=set)  # always 200 with the whole file
    status: dict[str, int] = field(default_factory=dict)  # fixed error status for these paths
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    count: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # the server closes the connection after every response

    def log_message(self, format, *args):  # keep test output quiet
        pass

    def do_GET(self):
        state: ServerState = self.server.state
        path, range_header = self.path, self.headers.get("Range")
        with state.lock:
            state.requests.append((path, range_header))
            n = state.count[path]
            state.count[path] += 1
        if path in state.status:
            self.send_error(state.status[path])
            return
        data = state.files.get(path)
        if data is None:
            self.send_error(404)
            return
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header or "")
        if m and path not in state.ignore_range:
            start = int(m.group(1))
            end = int(m.group(2)) if m.group(2) else len(data) - 1
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = data[start : end + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if path in state.cut_first and n == 0:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return  # the connection closes with half the promised bytes sent
        self.wfile.write(body)


@contextlib.contextmanager
def serve(port: int = 0) -> Iterator[tuple[str, ServerState]]:
    """A threaded HTTP server on 127.0.0.1 (``port``, 0 = random): yields its base URL and its state."""
    httpd = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    httpd.daemon_threads = True
    httpd.state = ServerState()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield base, httpd.state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
