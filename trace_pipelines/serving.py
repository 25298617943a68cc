"""Serving an ASGI app in a background thread, for tests, benchmarks and the demo.

The sandbox and the webhook receiver are both run this way; the port is bound before the
server starts, so no other process can take it in between.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn


@contextmanager
def serving_in_thread(app, name: str, startup_timeout_s: float = 30) -> Iterator[str]:
    """Serve `app` on a free 127.0.0.1 port for the `with` block; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]

    # Uvicorn installs signal handlers only on the main thread, so a server in another thread
    # leaves Ctrl-C to the caller; it stops when `should_exit` is set.
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"{name}-{port}", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"The {name} did not start on port {port}; see the log.")
        time.sleep(0.01)

    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
