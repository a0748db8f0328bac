"""Pure ASGI middleware and the HTTP protocol options of the server.

- ``SecurityHeaders``: conservative security headers on every HTTP response.
- ``HostOriginGuard``: DNS-rebinding and cross-site protection.  A request (HTTP or WebSocket) is answered
  only when its ``Host`` is one the server was started for (``localhost``, an IP address literal, the bound
  name, ``--allowed-host`` additions): a web page on ``attacker.example`` whose DNS name was re-pointed at
  127.0.0.1 sends ``Host: attacker.example`` and is refused (421).  A request carrying an ``Origin`` (every
  browser POST, every WebSocket) is answered only from this server's own origin or an allowed one: any
  other web site the user visits cannot spend this server's CPU, whatever the content type (403).  IP
  literals are accepted as Host because a rebinding attack needs a DNS name the attacker controls.
- ``header_timeout_protocol``: uvicorn's h11 protocol with a deadline on the request *headers* (uvicorn
  times out idle keep-alive connections but waits forever for half-sent headers: 500 such connections stay
  open).  The body has its own deadline in ``routes.read_body``.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .state import error_response

#: Host names always accepted (besides IP address literals)
LOCAL_HOSTS = frozenset({"localhost", "localhost.localdomain"})


class AddHeaders:
    """Pure ASGI middleware: the ``HEADERS`` a response lacks are added to every HTTP response; those named in
    ``REPLACE`` are set whatever the response had.  Subclasses say which (``SecurityHeaders`` here,
    ``assets.IsolationHeaders``)."""

    HEADERS: list[tuple[bytes, bytes]] = []
    REPLACE: frozenset[bytes] = frozenset()

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in self.REPLACE]
                names = {k.lower() for k, _ in kept}
                message["headers"] = kept + [(k, v) for k, v in self.HEADERS if k in self.REPLACE or k not in names]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class SecurityHeaders(AddHeaders):
    """Conservative security headers on every HTTP response (those the response does not set itself)."""

    HEADERS = [
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
        (b"permissions-policy", b"camera=(self), microphone=(), geolocation=()"),
        (b"content-security-policy",
         b"default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
         b"connect-src 'self'; style-src 'self'; script-src 'self'; object-src 'none'; "
         b"base-uri 'none'; frame-ancestors 'none'; form-action 'self'"),
    ]


def host_name(host: str) -> str:
    """The name part of a Host header (``[::1]:8000`` -> ``::1``, ``Example.COM.:80`` -> ``example.com``)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else ""
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def normalise_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


class HostOriginGuard:
    """Refuse requests whose Host is not ours (421) or whose Origin is another site (403); see module doc."""

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str] = (), allowed_origins: Iterable[str] = ()):
        self.app = app
        quiet_protocol_tracebacks()  # every ferlab app has this guard: the place to set up its server's log
        self.hosts = LOCAL_HOSTS | {host_name(h) for h in allowed_hosts if h}
        self.origins = {normalise_origin(o) for o in allowed_origins if o}

    def host_ok(self, host: str) -> bool:
        name = host_name(host)
        return bool(name) and (name in self.hosts or _is_ip(name))

    def origin_ok(self, origin: str, host: str) -> bool:
        o = normalise_origin(origin)
        if o in self.origins:
            return True
        try:
            parts = urlsplit(o)
        except ValueError:
            return False
        return parts.scheme in ("http", "https") and bool(parts.netloc) and parts.netloc == host.strip().lower()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        host = headers.get(b"host", b"").decode("latin-1")
        origin = headers.get(b"origin")
        if not self.host_ok(host):
            refusal = (421, "host_not_allowed", f"Host {host[:80]!r} is not one this server answers to "
                                                "(start it with --allowed-host NAME to add one)")
        elif origin is not None and not self.origin_ok(origin.decode("latin-1"), host):
            refusal = (403, "origin_not_allowed", f"requests from {origin.decode('latin-1')[:80]!r} are not "
                                                  "allowed (only this server's own pages)")
        else:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket" and "websocket.http.response" not in scope.get("extensions", {}):
            # a server without the denial-response extension: close before the handshake (HTTP 403)
            await send({"type": "websocket.close", "code": 1008, "reason": refusal[1]})
            return
        # HTTP, and a WebSocket handshake answered over HTTP (ASGI WebSocket denial response): 421 / 403 with
        # the JSON body {"detail", "kind"} of every other error
        await error_response(*refusal, headers={"Connection": "close"})(scope, receive, send)


class _ClientFaultFilter(logging.Filter):
    """Turns uvicorn's log of a client's protocol fault (a WebSocket text message that is not UTF-8: uvicorn
    closes the socket with 1007, then logs a traceback as if the server had failed) into one warning line."""

    MESSAGES = {"Invalid UTF-8 sequence received from client.":
                "WebSocket text message that is not valid UTF-8: closed with 1007"}

    def filter(self, record: logging.LogRecord) -> bool:
        line = self.MESSAGES.get(str(record.msg))
        if line is not None:
            record.msg, record.args = line, ()
            record.exc_info, record.exc_text, record.stack_info = None, None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_CLIENT_FAULT_FILTER = _ClientFaultFilter()


def quiet_protocol_tracebacks() -> None:
    """Install ``_ClientFaultFilter`` on uvicorn's error logger (once; ``logging.config`` keeps a logger's
    filters when uvicorn configures its handlers)."""
    logger = logging.getLogger("uvicorn.error")
    if _CLIENT_FAULT_FILTER not in logger.filters:
        logger.addFilter(_CLIENT_FAULT_FILTER)


def header_timeout_protocol(seconds: float):
    """uvicorn's h11 ``HTTP`` protocol class with a ``seconds`` deadline for each request's headers, from the
    connection (or the end of the previous response) on; a client that has not sent complete headers by then
    gets ``408`` and the connection is closed.  Pass it as ``uvicorn.run(..., http=...)``."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutH11Protocol(H11Protocol):
        header_timeout = float(seconds)
        _header_timer = None

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            if self.conn.our_state is h11.IDLE:
                self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                                     b"connection: close\r\ncontent-length: 56\r\n\r\n"
                                     b'{"detail":"request headers too slow","kind":"timeout"}\r\n')
            self.transport.close()

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._arm()

    return HeaderTimeoutH11Protocol
