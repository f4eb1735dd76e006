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
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=self.thread_name, daemon=True)
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
