from trioweb import App, WebSocket

app = App()
INVITED = {"alice", "bob"}


@app.websocket("/v2/chat")
async def chat_v2(ws: WebSocket) -> None:
    if "chat.v2" not in ws.subprotocols:  # what the client offered, in its order
        # A real HTTP 400, with a body:
        await ws.reject(400, "this endpoint speaks chat.v2")
        return
    await ws.accept(subprotocol="chat.v2", headers={"x-chat-version": "2.1"})
    await ws.send_json({"hello": ws.query_params.get("name", "stranger")})
    await ws.close(4000, "that was all")


@app.websocket("/beta")
async def beta(ws: WebSocket) -> tuple[str, int] | None:
    if ws.query_params.get("name") not in INVITED:
        return "invitation only", 403  # as in Quart: a response instead of an accept
    async with ws:
        await ws.send("welcome to the beta")
    return None
