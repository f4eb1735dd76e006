"""A threaded HTTP server on 127.0.0.1 run from a background thread: the part the test
servers (the model mirror, the fake Genius) share. Subclasses set `self._server`."""

import threading


class LoopbackServer:
    _server = None
    _thread = None
    thread_name = "loopback-server"

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self):
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=self.thread_name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def refused_port() -> int:
    """A loopback port nothing listens on (bound, then closed): connecting to it is refused at once,
    as when the machine is offline or a mirror is down."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HangingServer:
    """A loopback port that accepts connections (the kernel's backlog completes the handshake) and
    never answers: a stalled network or proxy. A context manager; `url` is its base URL."""

    def __init__(self):
        import socket

        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(16)  # never accept()ed: clients wait for an answer that does not come

    @property
    def url(self) -> str:
        host, port = self._socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._socket.close()
