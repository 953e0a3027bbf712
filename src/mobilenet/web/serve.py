"""Running the explorer: uvicorn on a socket bound here, the address said, Ctrl-C to stop.

The socket is bound before uvicorn starts, so that a port in use is a one-line error and the
address printed (port 0 asks the system for a free one) is the one really served. Only ``--host``
widens where it listens: the default is 127.0.0.1, this machine alone.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import webbrowser
from collections.abc import Callable, Iterator

from mobilenet.errors import InputError, option
from mobilenet.web import require_server

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port``; ``InputError`` if it cannot be had."""
    if not (isinstance(port, int) and 0 <= port <= 65535):
        raise InputError(f"{option('port')} must be a whole number from 0 to 65535, got {port!r}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as err:
        raise InputError(f"cannot listen on host {host!r}: {err.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        hint = f"; choose another {option('port')} (0: any free port)" if err.errno == 98 else ""
        raise InputError(f"cannot listen on {host}:{port}: {err.strerror}{hint}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, open_browser: bool = False,
          say: Callable[[str], None] = print) -> None:
    """Serve the explorer until Ctrl-C (or SIGTERM); ``say`` hears the address and the stop."""
    require_server()
    import uvicorn  # noqa: PLC0415

    from mobilenet.web.app import create_app  # noqa: PLC0415

    sock = bind(host, port)
    try:
        with _sigterm_as_ctrl_c():
            url = url_of(sock)
            say(f"mobilenet explore: serving on {url} (Ctrl-C stops it)")
            if host not in LOCAL_HOSTS:
                say(f"mobilenet explore: listening on {host}: other machines can reach it too")
            if open_browser:
                threading.Timer(0.5, webbrowser.open, args=(url,)).start()
            server = uvicorn.Server(uvicorn.Config(create_app(), log_level="warning", lifespan="off"))
            server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn hands the signal it caught back once it has shut down
        pass
    finally:
        sock.close()
    say("mobilenet explore: stopped")


@contextlib.contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM stops the server as Ctrl-C does. uvicorn shuts down gracefully on either, then
    raises the signal again under the handler that was there before it started: Python's default
    for SIGTERM ends the process (status 143) before "stopped" is said. Here SIGTERM raises
    KeyboardInterrupt instead, before uvicorn starts (while the app is built) and after it stops
    alike. Signal handlers belong to the main thread; elsewhere (a test's server) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
