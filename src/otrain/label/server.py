"""The HTTP side of ``otrain label``: a Starlette app served by uvicorn.

Security (the page is a tool on the labeller's own machine):

- binds 127.0.0.1 by default, and then accepts only ``Host: 127.0.0.1 / localhost / [::1]``
  (no DNS rebinding); any other bind needs a token;
- with a token, every request carries it: the ``X-Otrain-Token`` header, the ``token`` query
  parameter (the printed URL; it sets an HttpOnly, SameSite=Strict cookie) or that cookie;
  compared in constant time; missing or wrong: 401/403;
- nothing from a request names a file: candidates are queue positions, channels and stretches
  are checked against fixed lists, static files come from a fixed table;
- POSTs need ``Content-Type: application/json`` (a cross-site form cannot send it), a body of
  at most 4 KiB, a JSON object, a known label and an existing ``candid``; else 4xx.
"""

from __future__ import annotations

import hmac
import json
from importlib.resources import files
from typing import Any

from otrain.errors import OtrainError
from otrain.label.render import STRETCHES, stamp_png
from otrain.label.session import LabelSession, RequestError

MAX_BODY = 4096
TOKEN_HEADER = "x-otrain-token"
TOKEN_COOKIE = "otrain_label_token"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
#: URL name -> (package file, media type): the only files the server ever reads.
STATIC = {"app.js": ("app.js", "text/javascript; charset=utf-8"),
          "style.css": ("style.css", "text/css; charset=utf-8")}
_SECURITY_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self'; "
                     "script-src 'self'; style-src 'self'; frame-ancestors 'none'",
                     "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                     "Cache-Control": "no-store"}


def require_server_packages() -> None:
    """Raise a clear error when Starlette or uvicorn is missing."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise OtrainError("otrain label needs Starlette and uvicorn: pip install "
                          "'otrain[label]'") from None


def is_local(host: str) -> bool:
    """True for loopback addresses and names."""
    return host in LOCAL_HOSTS or host.startswith("127.")


def _static_text(name: str) -> str:
    return files("otrain.label").joinpath("static", name).read_text(encoding="utf-8")


def create_app(session: LabelSession, token: str | None = None,
               allowed_hosts: tuple[str, ...] | None = LOCAL_HOSTS) -> Any:
    """The ASGI app for one session.

    Parameters
    ----------
    session : LabelSession
        The state behind the page.
    token : str, optional
        Required on every request when given.
    allowed_hosts : tuple of str or None
        Accepted ``Host`` header names (None: any, for a non-local bind with a token).
    """
    require_server_packages()
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    pages = {name: (_static_text(fname), media) for name, (fname, media) in STATIC.items()}
    index_html = _static_text("index.html")

    def error(message: str, status: int) -> Response:
        return JSONResponse({"error": message}, status_code=status, headers=_SECURITY_HEADERS)

    def ok(data: Any) -> Response:
        return JSONResponse(data, headers=_SECURITY_HEADERS)

    def check_token(request: Request) -> Response | None:
        if token is None:
            return None
        given = (request.headers.get(TOKEN_HEADER) or request.query_params.get("token")
                 or request.cookies.get(TOKEN_COOKIE))
        if not given:
            return error("this server needs its token (X-Otrain-Token header or ?token=)", 401)
        if not hmac.compare_digest(given.encode(), token.encode()):
            return error("wrong token", 403)
        return None

    async def read_json(request: Request) -> dict[str, Any]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise RequestError("POST bodies must be application/json", 415)
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            raise RequestError(f"body larger than {MAX_BODY} bytes", 413)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise RequestError(f"body larger than {MAX_BODY} bytes", 413)
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise RequestError("body is not valid JSON", 400) from None
        if not isinstance(data, dict):
            raise RequestError("body must be a JSON object", 400)
        return data

    def guarded(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestError as exc:
                return error(exc.reason, exc.status)
        return endpoint

    class TokenMiddleware:
        """Refuse every HTTP request (unknown paths included) without the token."""

        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                refused = check_token(Request(scope))
                if refused is not None:
                    await refused(scope, receive, send)
                    return
            await self.app(scope, receive, send)

    def position(request: Request) -> int:
        return session.check_position(int(request.path_params["pos"]))

    async def index(request: Request) -> Response:
        resp = Response(index_html, media_type="text/html; charset=utf-8",
                        headers=_SECURITY_HEADERS)
        if token is not None and request.query_params.get("token"):
            resp.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return resp

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in pages:
            raise RequestError("no such file", 404)
        text, media = pages[name]
        return Response(text, media_type=media, headers=_SECURITY_HEADERS)

    async def state(request: Request) -> Response:
        return ok(await run_in_threadpool(session.state))

    async def candidate(request: Request) -> Response:
        return ok(session.candidate(position(request)))

    async def grid(request: Request) -> Response:
        try:
            start = int(request.query_params.get("start", "0"))
            n = int(request.query_params.get("n", "30"))
        except ValueError:
            raise RequestError("start and n must be integers", 400) from None
        return ok(session.grid(start, n))

    async def stamp(request: Request) -> Response:
        pos = position(request)
        method = request.query_params.get("stretch", "zscale")
        if method not in STRETCHES:
            raise RequestError(f"stretch must be one of {', '.join(STRETCHES)}", 400)
        invert = request.query_params.get("invert", "0") in ("1", "true")
        pixels = await run_in_threadpool(session.image, pos, request.path_params["channel"])
        png = await run_in_threadpool(stamp_png, pixels, method, invert)
        return Response(png, media_type="image/png", headers=_SECURITY_HEADERS)

    async def label(request: Request) -> Response:
        data = await read_json(request)
        result = await run_in_threadpool(session.label, data.get("candid"), data.get("label"),
                                         data.get("nonce"))
        return ok(result)

    async def undo(request: Request) -> Response:
        data = await read_json(request)
        return ok(await run_in_threadpool(session.undo, data.get("nonce")))

    routes = [
        Route("/", guarded(index), methods=["GET"]),
        Route("/static/{name:str}", guarded(static), methods=["GET"]),
        Route("/favicon.ico", lambda request: Response(status_code=204), methods=["GET"]),
        Route("/api/state", guarded(state), methods=["GET"]),
        Route("/api/candidate/{pos:int}", guarded(candidate), methods=["GET"]),
        Route("/api/grid", guarded(grid), methods=["GET"]),
        Route("/api/stamp/{pos:int}/{channel:str}", guarded(stamp), methods=["GET"]),
        Route("/api/label", guarded(label), methods=["POST"]),
        Route("/api/undo", guarded(undo), methods=["POST"]),
    ]
    middleware = []
    if allowed_hosts is not None:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)))
    if token is not None:
        middleware.append(Middleware(TokenMiddleware))
    return Starlette(routes=routes, middleware=middleware)


def serve(app: Any, host: str, port: int) -> None:
    """Run the app with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False,
                server_header=False, limit_concurrency=200, timeout_keep_alive=5)
