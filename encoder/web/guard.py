"""The ASGI layer in front of every request: the optional token, the upload size limit, safe headers.

* Token: when the server has one, every request carries it as ``X-Token: T``,
  ``Authorization: Bearer T`` or the ``encoder_token`` cookie; opening any page with ``?token=T``
  sets the cookie (HttpOnly, SameSite=Strict) and redirects to the same page without it. The
  comparison is :func:`hmac.compare_digest` (constant time). A request without it gets 401.
* Size: a declared ``Content-Length`` over the limit is refused at once (413); a body sent
  without one (chunked) is counted while it is read and refused the moment it passes the limit,
  so a big upload is never held in memory or on disk whole.
* Headers: ``X-Content-Type-Options: nosniff``, a same-origin Content-Security-Policy (the pages
  load nothing from elsewhere), ``Referrer-Policy: no-referrer``.
"""

from __future__ import annotations

import hmac
import json
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlencode

from starlette.exceptions import HTTPException

COOKIE = "encoder_token"
SLACK = 64 * 1024  # multipart framing and form fields on top of the file itself
HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
    ),
]


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"upload larger than the {limit / 1e6:g} MB limit (the server's --max-upload-mb)")


async def _send_json(send, status: int, body: dict, extra: list | None = None) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *HEADERS,
                *(extra or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


def _headers(scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


class Guard:
    """ASGI middleware; see the module docstring. ``max_upload``: bytes of the uploaded file."""

    def __init__(self, app, *, token: str | None = None, max_upload: int = 20_000_000):
        self.app, self.max_upload = app, max_upload
        self.token = token.encode() if token else None
        self.max_body = max_upload + SLACK

    def _token_of(self, headers: dict[str, str]) -> str | None:
        if "x-token" in headers:
            return headers["x-token"]
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed cookie header is simply no token
            return None
        return cookie[COOKIE].value if COOKIE in cookie else None

    def _ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token)

    async def _check_token(self, scope, send, headers) -> bool:
        """True when the request may go on; else the answer (401, or the cookie-setting redirect) is sent."""
        if self._ok(self._token_of(headers)):
            return True
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = dict(query).get("token")
        if scope["method"] == "GET" and self._ok(given):
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            cookie = f"{COOKIE}={given}; HttpOnly; SameSite=Strict; Path=/"
            await send(
                {
                    "type": "http.response.start",
                    "status": 303,
                    "headers": [
                        (b"location", (scope["path"] + ("?" + rest if rest else "")).encode()),
                        (b"set-cookie", cookie.encode()),
                        (b"content-length", b"0"),
                        *HEADERS,
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return False
        await _send_json(
            send,
            401,
            {"error": "this server needs its token: open the page with ?token=T once, or send the header X-Token: T"},
        )
        return False

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = _headers(scope)
        if self.token is not None and not await self._check_token(scope, send, headers):
            return
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            return await _send_json(send, 413, {"error": BodyTooLarge(self.max_upload).detail})
        seen, started = 0, False

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise BodyTooLarge(self.max_upload)
            return message

        async def send_with_headers(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", []), *HEADERS]}
            await send(message)

        try:
            await self.app(scope, counted, send_with_headers)
        except BodyTooLarge as e:  # raised outside a route (its handler answers it inside one)
            if not started:
                await _send_json(send, 413, {"error": e.detail})


__all__ = ["Guard", "BodyTooLarge", "COOKIE"]
