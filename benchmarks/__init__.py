"""Side-by-side benchmarks: trioweb, a bare ASGI app, Starlette and quart-trio on hypercorn.

``python -m benchmarks [--quick] [--out DIR]`` (or ``nox -s bench``); see docs/performance.md.
"""
