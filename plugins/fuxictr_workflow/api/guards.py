"""Checks on every request to the plugin app before any route (or body parser) sees it.

- Bodies over ``api.max_body_bytes`` are refused with 413: a declared Content-Length at
  once, a chunked or under-declared body as soon as what arrived passes the cap.
- State-changing requests (anything but GET/HEAD/OPTIONS) from a browser page of another
  origin are refused with 403. A browser always sends ``Origin`` on cross-origin POSTs; it
  must be this server (the Host the request came to, or Airflow's ``[api] base_url``).
- A state-changing request authenticated by the ``_token`` cookie (no Bearer header) must
  carry ``X-Requested-By``: a cross-site HTML form cannot set a header, and a cross-site
  ``fetch`` that sets one needs a CORS preflight this app never grants. Bearer-token clients
  are not affected (a browser never adds a Bearer header by itself).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from fastapi import HTTPException

from fuxictr_workflow.api.security import COOKIE
from fuxictr_workflow.domain.config import get_config

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "x-requested-by"


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def own_origins(scope: Scope, headers: dict[str, str]) -> set[str]:
    """The origins this server answers as: the Host it was reached at, and [api] base_url."""
    scheme = {"ws": "http", "wss": "https"}.get(scope.get("scheme", "http"), scope.get("scheme", "http"))
    origins = {f"{scheme}://{headers['host']}".lower()} if headers.get("host") else set()
    try:
        from airflow.configuration import conf

        base_url = conf.get("api", "base_url", fallback=None)
    except ImportError:  # outside Airflow (tests of the plain app)
        base_url = None
    if base_url and (origin := _origin_of(base_url)):
        origins.add(origin)
    return origins


def foreign_origin(scope: Scope) -> str | None:
    """The request's Origin when it names another site; None when absent or our own."""
    headers = _headers(scope)
    origin = headers.get("origin")
    if origin is None or origin.lower() in own_origins(scope, headers):
        return None
    return origin


def _cookie_authenticated(headers: dict[str, str]) -> bool:
    if headers.get("authorization", "").lower().startswith("bearer "):
        return False
    cookies = headers.get("cookie", "")
    return any(part.strip().startswith(f"{COOKIE}=") for part in cookies.split(";"))


def refusal(scope: Scope) -> tuple[int, str] | None:
    """(status, reason) when the request must not reach the app; None when it may."""
    headers = _headers(scope)
    if scope["method"] not in SAFE_METHODS:
        if origin := foreign_origin(scope):
            return 403, f"cross-site request refused (Origin {origin} is not this server)"
        if _cookie_authenticated(headers) and not headers.get(CSRF_HEADER):
            return 403, "requests authenticated by the session cookie need the X-Requested-By header"
    declared = headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            return 400, "invalid Content-Length"
        limit = get_config().api.max_body_bytes
        if int(declared) > limit:
            return 413, f"request body of {declared} bytes is over the limit of {limit} (api.max_body_bytes)"
    return None


# A refused request's body is read and dropped up to this many bytes before the answer: a
# client that writes its whole body before reading (urllib, requests, urllib3) would otherwise
# hit a closed socket and never see the 413. A larger body gets the answer at once.
DRAIN_MAX_BYTES = 16 << 20


async def _drain(receive: Receive) -> None:
    budget = DRAIN_MAX_BYTES
    while budget > 0:
        message = await receive()
        if message["type"] != "http.request":
            return
        budget -= len(message.get("body", b""))
        if not message.get("more_body"):
            return


async def _reply(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """ASGI middleware applying :func:`refusal` and the streaming body cap."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = refusal(scope)
        if refused is not None:
            await _drain(receive)
            await _reply(send, *refused)
            return
        limit = get_config().api.max_body_bytes
        too_large = f"request body is over the limit of {limit} bytes (api.max_body_bytes)"
        received = 0
        started = False

        async def capped_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:  # FastAPI's body parser passes an HTTPException on as is
                    raise HTTPException(413, too_large)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, capped_receive, tracked_send)
        except HTTPException as err:  # raised by capped_receive outside a route's body parsing
            if started or err.status_code != 413:
                raise
            await _reply(send, 413, too_large)
