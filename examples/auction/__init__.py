"""A live auction: ``trioweb run examples.auction:app``, then open http://127.0.0.1:8000/.

Each room sells one lot after another: members bid and chat, and one countdown per room
(whichever process owns the room runs it) sells the lot to the highest bidder when it ends.

- ``TRIOWEB_BROADCAST_URL=redis://127.0.0.1:6379/0``: processes (``--workers 2``, or hosts)
  share rooms through Redis; unset, everything lives in the one process.
- ``AUCTION_LOT_SECONDS`` (default 60): how long a lot is on sale.
- ``AUCTION_PRESENCE_TTL`` (default 5): how soon a crashed process's members leave the others'
  view, in seconds.
- ``AUCTION_HISTORY`` (default 1000): how many bids, chats and sales each room keeps for
  members that reconnect.

The page (``index.html``, at ``/``) is the full example of trioweb's browser client
(docs/browser-client.md): it imports ``connect`` from ``/trioweb.js`` (``app.serve_client``),
comes back by itself after a restart or a network failure (full-jitter backoff, up to 10 s), and
resumes with ``?since=`` the last offset it saw: on ``recovered`` it keeps its log and appends
what it missed; on ``reset`` it clears its log and high bid and starts over from the welcome. The
route has ``browser_denials="close"``: a page without a user name gets close 4401 and the reason,
shows it and stops trying. tests/test_auction_browser.py runs it in Chromium across a restart.

The wire protocol, JSON text frames on ``/ws/{room}?user=NAME[&since=OFFSET]`` (no user: HTTP
401, or, for a handshake with an ``Origin`` header (a browser's), accepted and closed with 4401
and the reason). The server sends:

- ``{"type": "welcome", "you", "members", "high", "closes_in"}``: first, on join; with
  ``since``, it also has ``"recovered"``: ``true`` if every bid, chat and sale after OFFSET was
  still stored (they follow at once, in order, then the live stream, none twice), ``false``
  if OFFSET is unknown or too old (the client gets only the current state);
- ``{"type": "presence", "members": [...]}``: someone came or went, anywhere (the member's
  own join included);
- ``{"type": "bid", "offset", "amount", "by"}``: a bid was accepted, to everyone, in
  acceptance order;
- ``{"type": "chat", "offset", "by", "text"}``: someone said something;
- ``{"type": "tick", "closes_in": SECONDS}``: each second, and as a new lot starts;
- ``{"type": "sold", "offset", "amount", "by"}`` (``null`` values if nobody bid): the lot
  closed, the next one starts with no high bid;
- to the sender only: ``{"type": "error", "code": "too_low", "high": N}``, ``{"type":
  "error", "code": "lot_closed", "detail"}`` (the bid came as its lot closed; not in the
  issue's protocol) and ``{"type": "error", "code": "bad_message", "detail"}`` (the socket
  stays open).

Clients send ``{"type": "bid", "amount": N}`` (a positive integer) and ``{"type": "chat",
"text": T}``. ``offset`` (a string, opaque to clients, strictly increasing per room in the
order of publication) marks what a reconnecting client passes as ``since``. ``members`` is the
sorted list of distinct user names in the room, in every process; ``high`` is ``{"amount": N,
"by": NAME}`` or ``null``. ``GET /rooms`` gives ``{ROOM: {"members": N, "local": N}}``
(connections in every process, and in this one) for the rooms this process has members in.
"""

from .app import app, make_app

__all__ = ["app", "make_app"]
