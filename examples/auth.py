"""Authenticating WebSocket handshakes: four places a client can put its credentials.

    trioweb run examples.auth:app

Browsers cannot set headers on a WebSocket handshake, so browser clients use a cookie (sent
automatically, hence the origin check, on by default), a query parameter, or the subprotocol
trick; other clients use the Authorization header. Whatever the source, one before_websocket
hook checks it and denies with a real 401 or 403, before any handler runs.
"""

import functools
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from trioweb import App, WebSocket, abort

# In a real app: look the token up in your session store or verify a signed token.
TOKENS = {"s3cret-alice": "alice", "s3cret-bob": "bob"}
ADMINS = {"alice"}
SUBPROTOCOL = "access_token"

app = App()


def user_for(token: str | None) -> str | None:
    """The user a token belongs to, compared in constant time."""
    if not token:
        return None
    for known, user in TOKENS.items():
        if hmac.compare_digest(known.encode(), token.encode()):
            return user
    return None


def token_from(ws: WebSocket) -> str | None:
    """The client's token, from wherever it put it."""
    auth = ws.authorization
    if auth is not None and auth.token:  # Authorization: Bearer <token>
        return auth.token
    if "token" in ws.query_params:  # wss://host/path?token=<token>
        return ws.query_params["token"]
    if "session" in ws.cookies:  # a cookie set by your login page
        return ws.cookies["session"]
    offered = ws.subprotocols  # new WebSocket(url, ["access_token", token])
    if len(offered) == 2 and offered[0] == SUBPROTOCOL:
        return offered[1]
    return None


@app.before_websocket
async def authenticate(ws: WebSocket) -> None:
    user = user_for(token_from(ws))
    if user is None:
        abort(401, "missing or invalid token", {"www-authenticate": "Bearer"})
    ws.state.user = user
    if ws.path.startswith("/admin") and user not in ADMINS:
        abort(403, f"{user} is not an administrator")


async def accept(ws: WebSocket) -> None:
    """Accept, giving back the subprotocol a browser offered for the token trick (a browser that
    offered subprotocols drops the socket unless the server picks one)."""
    await ws.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in ws.subprotocols else None)


def require_api_key(
    handler: Callable[..., Awaitable[Any]],
) -> Callable[..., Awaitable[Any]]:
    """A per-route check as Quart users write them: returning a response denies the handshake."""

    @functools.wraps(handler)  # keeps the signature: trioweb still sees the path parameters
    async def checked(ws: WebSocket, **params: Any) -> Any:
        if ws.headers.get("x-api-key") != "k3y":
            return "a valid X-API-Key header is required", 403
        return await handler(ws, **params)

    return checked


@app.websocket("/reports/{year:int}")
@require_api_key
async def reports(ws: WebSocket, year: int) -> None:
    await accept(ws)
    await ws.send_json({"user": ws.state.user, "year": year})


@app.websocket("/whoami")
async def whoami(ws: WebSocket) -> None:
    await accept(ws)
    await ws.send_json({"user": ws.state.user})


@app.websocket("/admin/stats")
async def admin_stats(ws: WebSocket) -> None:
    await accept(ws)
    await ws.send_json({"user": ws.state.user, "connections": len(app.connections)})
