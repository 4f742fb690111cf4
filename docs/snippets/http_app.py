from trioweb import App, JSONResponse, Request, abort

app = App()
USERS = {1: "alice", 2: "bob"}


@app.get("/users/{user_id:int}")
async def user(request: Request, user_id: int) -> dict[str, object]:
    if user_id not in USERS:
        abort(404, "no such user")
    return {"id": user_id, "name": USERS[user_id]}  # a dict becomes JSON


@app.post("/users", max_body_size=64 * 1024)
async def create(request: Request) -> JSONResponse:
    data = await request.json()  # malformed JSON: 400
    return JSONResponse({"created": data}, status_code=201)
