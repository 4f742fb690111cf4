"""Echo: the smallest trioweb app, with a page to try it in a browser.

trioweb run examples.echo:app     # then open http://127.0.0.1:8000/
"""

from trioweb import App, HTMLResponse, Request, WebSocket

app = App()


@app.websocket("/ws")
async def echo(ws: WebSocket) -> None:
    async with ws:  # accept now, close with 1000 when the block ends
        async for message in ws:  # ends quietly when the client leaves
            await ws.send(message)


@app.get("/")
async def page(request: Request) -> HTMLResponse:
    return HTMLResponse(PAGE)


PAGE = """<!doctype html>
<meta charset="utf-8">
<title>trioweb echo</title>
<h1>trioweb echo</h1>
<form id="form"><input id="text" autocomplete="off" autofocus><button>Send</button></form>
<ul id="log"></ul>
<script>
  const log = document.getElementById("log");
  const show = (text) => log.appendChild(document.createElement("li")).textContent = text;
  const ws = new WebSocket(`ws://${location.host}/ws`);
  ws.onopen = () => show("connected");
  ws.onmessage = (event) => show(`echo: ${event.data}`);
  ws.onclose = (event) => show(`closed with ${event.code}`);
  document.getElementById("form").onsubmit = (event) => {
    event.preventDefault();
    const input = document.getElementById("text");
    ws.send(input.value);
    input.value = "";
  };
</script>
"""
