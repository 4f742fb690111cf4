import functools
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from trioweb import App, WebSocket, abort

app = App()
# In a real app: a session store, or signed tokens you verify.
USERS = {"t0k-alice": ("alice", {"admin"}), "t0k-bob": ("bob", set())}

Handler = Callable[..., Awaitable[Any]]


def user_for(ws: WebSocket) -> tuple[str, set[str]] | None:
    auth = ws.authorization  # the Authorization header parsed, or None
    token = auth.token if auth and auth.token else ws.query_params.get("token", "")
    for known, user in USERS.items():
        if hmac.compare_digest(known.encode(), token.encode()):  # constant time
            return user
    return None


def login_required(role: str | None = None) -> Callable[[Handler], Handler]:
    """Deny the handshake with a real 401 or 403 before the handler runs."""

    def decorate(handler: Handler) -> Handler:
        # wraps() keeps the signature: path parameters and nursery still work.
        @functools.wraps(handler)
        async def wrapper(ws: WebSocket, *args: Any, **kwargs: Any) -> Any:
            user = user_for(ws)
            if user is None:
                abort(401, "log in first", {"www-authenticate": "Bearer"})
            name, roles = user
            if role is not None and role not in roles:
                abort(403, f"{name} may not do that")
            ws.state.user = name
            return await handler(ws, *args, **kwargs)

        return wrapper

    return decorate


@app.websocket("/me")
@login_required()
async def me(ws: WebSocket) -> None:
    async with ws:
        await ws.send_json({"user": ws.state.user})


@app.websocket("/admin/{section}")
@login_required(role="admin")
async def admin(ws: WebSocket, section: str) -> None:
    async with ws:
        await ws.send_json({"user": ws.state.user, "section": section})
