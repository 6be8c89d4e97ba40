"""Every error the server answers, in OpenAI's shape {"error": {"message", "type", "param", "code"}}, and
the ASGI guard in front of the app: the Bearer key and the request body's size cap.

A user's mistake is a 4xx with a message saying what is wrong; a 500 means a bug in the server."""
from __future__ import annotations

import hmac
import json

from starlette.responses import JSONResponse

from .schemas import EXPECTED


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type_: str = "invalid_request_error", headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type_
        self.headers = headers

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.param, self.code, self.type, self.headers)


def error_body(message: str, param=None, code=None, type_="invalid_request_error") -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(status: int, message: str, param=None, code=None, type_="invalid_request_error",
                   headers=None) -> JSONResponse:
    return JSONResponse(error_body(message, param, code, type_), status_code=status, headers=headers)


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validation_message(errors: list[dict], fields: list[str]) -> tuple[str, str | None]:
    """(message, param) for pydantic's errors about a request body: the first problem, in words."""
    e = errors[0]
    loc = [str(x) for x in e.get("loc", ()) if x != "body"]
    param = loc[0] if loc else None
    kind = e.get("type", "")
    if kind == "json_invalid":
        return f"the request body is not valid JSON ({(e.get('ctx') or {}).get('error', 'parse error')})", None
    if param is None:
        return ("the request body must be a JSON object, sent with Content-Type: application/json, "
                'e.g. {"prompt": "ROMEO:", "max_tokens": 100}'), None
    if kind == "extra_forbidden":
        return f"unknown field {param!r} (this endpoint takes: {', '.join(fields)})", param
    if kind == "missing":
        return f"{param} is required", param
    if param in EXPECTED and len(loc) <= 2 and not kind.startswith(("greater", "less", "too_")):
        return f"{param} must be {EXPECTED[param]}, got {_shown(e.get('input'))}", param
    where = ".".join(loc)
    return f"{where}: {e.get('msg', 'invalid value')}, got {_shown(e.get('input'))}", param


class Guard:
    """ASGI middleware: /v1/... needs `Authorization: Bearer KEY` when a key is set (the page, /healthz
    and the OpenAPI document do not); a request body over max_body bytes is a 413 before it is parsed."""

    def __init__(self, app, api_key: str | None, max_body: int):
        self.app, self.api_key, self.max_body = app, api_key, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.api_key and scope["path"].startswith("/v1"):
            headers = dict(scope["headers"])
            given = headers.get(b"authorization", b"").decode("latin-1")
            token = given[7:].strip() if given[:7].lower() == "bearer " else ""
            if not hmac.compare_digest(token.encode(), self.api_key.encode()):
                what = "a wrong API key" if token else "no API key"
                return await _send_error(send, 401, f"{what}: send the header Authorization: Bearer KEY "
                                         "(the key given to charrnn serve)", "invalid_api_key")
        if scope["method"] in ("POST", "PUT", "PATCH"):
            body, more = b"", True
            while more:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    return
                body += msg.get("body", b"")
                more = msg.get("more_body", False)
                if len(body) > self.max_body:
                    return await _send_error(send, 413, f"the request body is over {self.max_body:,} bytes",
                                             "request_too_large")
            replayed = False

            async def replay():
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()  # after the body: http.disconnect when the client leaves
            return await self.app(scope, replay, send)
        return await self.app(scope, receive, send)


async def _send_error(send, status: int, message: str, code: str) -> None:
    payload = json.dumps(error_body(message, None, code)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
