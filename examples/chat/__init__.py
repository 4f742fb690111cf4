"""Chat rooms: ``trioweb run examples.chat:app``, then open http://127.0.0.1:8000/.

Rooms with presence and history (:mod:`trioweb.rooms`); the page resumes where it was after a
reconnect (the browser client). The protocol is in ``app.py``'s docstring.

One process, in-process hub: the command above. Several worker processes (or hosts) share
rooms through Redis: ``TRIOWEB_BROADCAST_URL=redis://127.0.0.1:6379/0 trioweb run
examples.chat:app --workers 2``.
"""

from .app import app, hub, rooms

__all__ = ["app", "hub", "rooms"]
