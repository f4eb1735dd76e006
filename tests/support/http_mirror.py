"""A loopback HTTP mirror of model directories, for tests that exercise `rapgen download`.

`ModelMirror({"355M": some_model_dir})` serves `some_model_dir/<file>` at
`http://127.0.0.1:<port>/355M/<file>` from a thread, with single-range `Range` requests
(206, 416) like a real blob store. It records every request, and can misbehave on purpose
for a given path (`fault`): drop the connection mid-body, send a body shorter than its
`Content-Length`, answer 500 with an HTML page, answer 404, answer 429 with a `Retry-After`, or
ignore `Range`.

    with ModelMirror({"124M": "path/to/tiny_model"}) as mirror:
        os.environ["RAPGEN_MODEL_URL"] = mirror.url
        ...
        mirror.gets("/124M/hparams.json")   # the GET requests the server saw for that path

Run it by hand to try the command line against it:
`cd tests && python -m support.http_mirror 124M=path/to/model_dir [--port 8000]`.
"""

from __future__ import annotations

import dataclasses
import http.server
import os
import re
import threading
import urllib.parse

from support.loopback import LoopbackServer

FAULTS = ("drop", "truncate", "error500", "not_found", "ignore_range", "slow_down")

_ERROR_PAGE = b"<html><head><title>500 Internal Server Error</title></head><body>oops</body></html>\n"


@dataclasses.dataclass
class Request:
    method: str
    path: str
    range: str | None  # the Range header, if any
    status: int = 0


class ModelMirror(LoopbackServer):
    """Serves model directories on 127.0.0.1 from a background thread (a context manager).
    `url` is the base URL to give `download(base_url=…)` or `RAPGEN_MODEL_URL`."""

    thread_name = "model-mirror"

    def __init__(self, models: dict, port: int = 0):
        self.models = {str(name): os.fspath(path) for name, path in models.items()}
        self.requests: list[Request] = []
        self.retry_after = "0.3"  # the Retry-After header of a `slow_down` fault
        self._faults: dict = {}  # path -> [kind, remaining count or None]
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = None

    def fault(self, path: str, kind: str, times: int | None = None) -> None:
        """Misbehave on requests for `path` (e.g. `/124M/vocab.bpe`); `times=None` is forever.

        drop: send the headers and half the body, then close the connection.
        truncate: announce 100 bytes more than the file and send only the file (ignores Range).
        error500: status 500 with an HTML page. not_found: 404. ignore_range: answer 200 always.
        slow_down: status 429 with `Retry-After: <mirror.retry_after>` (seconds, "0.3" unless set).
        """
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; choose from {FAULTS}")
        with self._lock:
            self._faults[path] = [kind, times]

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def gets(self, path: str) -> list:
        """The GET requests seen for `path`, oldest first."""
        with self._lock:
            return [r for r in self.requests if r.method == "GET" and r.path == path]

    def _take_fault(self, path: str):
        with self._lock:
            entry = self._faults.get(path)
            if entry is None:
                return None
            kind, remaining = entry
            if remaining is not None:
                if remaining <= 0:
                    return None
                entry[1] = remaining - 1
            return kind

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def _file_for(self, path: str):
        parts = path.strip("/").split("/")
        if len(parts) != 2 or parts[0] not in self.models or parts[1] in ("", ".", ".."):
            return None
        full = os.path.join(self.models[parts[0]], parts[1])
        return full if os.path.isfile(full) else None


def _parse_range(header: str | None, size: int):
    """One `bytes=a-b` range as (start, end inclusive); None to serve it all; 'bad' for 416."""
    if not header:
        return None
    found = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not found or found.group(1) == found.group(2) == "":
        return None  # multiple or malformed ranges: a server may ignore them
    first, last = found.groups()
    if first == "":  # a suffix: the last N bytes
        n = int(last)
        if n == 0:
            return "bad"
        return max(size - n, 0), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        return "bad"
    return start, end


def _make_handler(mirror: ModelMirror):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as requests' Session expects

        def log_message(self, *args):  # keep test output clean
            pass

        def do_HEAD(self):
            self._serve(body=False)

        def do_GET(self):
            self._serve(body=True)

        def _plain(self, status: int, payload: bytes, content_type="text/plain", extra=()):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for key, value in extra:
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        def _serve(self, body: bool):
            path = urllib.parse.urlsplit(self.path).path
            record = Request(self.command, path, self.headers.get("Range"))
            mirror._record(record)
            fault = mirror._take_fault(path)
            full = mirror._file_for(path)
            if fault == "slow_down":
                record.status = 429
                return self._plain(429, b"slow down\n", extra=[("Retry-After", mirror.retry_after)])
            if fault == "error500":
                record.status = 500
                return self._plain(500, _ERROR_PAGE, "text/html")
            if fault == "not_found" or full is None:
                record.status = 404
                return self._plain(404, b"<html><body>404 Not Found</body></html>\n", "text/html")
            with open(full, "rb") as f:
                data = f.read()
            size = len(data)
            wanted = None if fault in ("ignore_range", "truncate") else _parse_range(record.range, size)
            if wanted == "bad":
                record.status = 416
                return self._plain(416, b"", extra=[("Content-Range", f"bytes */{size}")])
            if wanted is None:
                start, end, status = 0, size - 1, 200
            else:
                (start, end), status = wanted, 206
            payload = data[start : end + 1]
            declared = len(payload) + (100 if fault == "truncate" else 0)
            record.status = status
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(declared))
            self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if not body:
                return
            if fault == "drop":
                payload = payload[: len(payload) // 2]
            self.wfile.write(payload)
            self.wfile.flush()
            if fault in ("drop", "truncate"):
                self.close_connection = True  # the client sees the body end early

    return Handler


def main(argv=None) -> int:
    import argparse
    import time

    parser = argparse.ArgumentParser(description="Serve model directories as a rapgen download mirror.")
    parser.add_argument("models", nargs="+", help="NAME=DIR, e.g. 124M=checkpoints/tiny")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    models = dict(item.split("=", 1) for item in args.models)
    with ModelMirror(models, port=args.port) as mirror:
        print(f"serving {', '.join(models)} at {mirror.url} (Ctrl-C stops)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
