from trioweb import App, JSONResponse, PlainTextResponse, Request, Response

app = App()
SETTINGS = {"theme": "dark"}


@app.before_request
async def auth(request: Request) -> PlainTextResponse | None:
    if not request.headers.get("authorization"):
        return PlainTextResponse("log in", 401)  # a response short-cuts the handler
    return None


@app.after_request
async def server_header(request: Request, response: Response) -> None:
    response.set_header("server", "trioweb")


@app.errorhandler(KeyError)
async def missing(request: Request, exc: KeyError) -> JSONResponse:
    return JSONResponse({"missing": exc.args[0]}, status_code=404)


@app.get("/settings/{key}")
async def setting(request: Request, key: str) -> dict[str, str]:
    return {key: SETTINGS[key]}
