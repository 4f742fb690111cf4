"""JSON encoding that always yields text a WebSocket or HTTP body can carry."""

from __future__ import annotations

import json
from typing import Any


def json_text(data: Any) -> str:
    """Compact JSON; non-ASCII kept as is, unless it holds lone surrogates (then escaped).

    A Python str may hold lone surrogates that UTF-8 cannot encode; escaping them keeps the
    JSON valid and the value the same.
    """
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return json.dumps(data, separators=(",", ":"), ensure_ascii=True)
    return text


#: What parsing untrusted JSON can raise besides ValueError: deep nesting.
JSON_ERRORS = (ValueError, UnicodeDecodeError, RecursionError)
