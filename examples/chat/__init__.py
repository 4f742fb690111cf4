"""Chat rooms: ``trioweb run examples.chat:app``, then open http://127.0.0.1:8000/.

One process, in-process hub: the command above. Several worker processes (or hosts) share
rooms through Redis: ``TRIOWEB_BROADCAST_URL=redis://127.0.0.1:6379/0 trioweb run
examples.chat:app --workers 2``.
"""

from .app import app, hub

__all__ = ["app", "hub"]
