"""Apps whose own routes already answer where ``--metrics`` and ``--health`` would mount theirs
(tests/test_cli_errors.py)."""

from trioweb import App, Response

metrics = App()


@metrics.get("/metrics")
async def own_metrics(request: object) -> Response:
    return Response(b"the app's own page")


spa = App()


@spa.get("/{page:path}")
async def index(request: object, page: str) -> Response:
    """A single-page app's fallback: every GET gets the page."""
    return Response(b"<html>")


own_health = App()
own_health.serve_health()  # in code, and `--health` on the command line as well
