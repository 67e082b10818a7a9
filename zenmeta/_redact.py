"""A store URL as it may be shown: with its password masked.

Every place that prints or stores a store URL (``zenmeta store info``,
``Client().url``, warnings and errors, the dashboard, exports) shows it
through ``masked_url``; the real URL stays in memory, with the store that
opened it. A leaf on purpose: the store, the readers and the screens share
this one rule. SQLAlchemy is not used for it (``import zenmeta`` stays
light, and its ``URL.set(password=None)`` keeps the password anyway).
"""

from __future__ import annotations

import re

__all__ = ["MASK", "masked_url"]

MASK = "***"

# A password given as a query parameter (``?password=…``, libpq's spelling).
_QUERY_SECRET = re.compile(r"([?&](?:password|passwd|pwd)=)[^&#]*", re.IGNORECASE)


def masked_url(url: str) -> str:
    """``scheme://user:***@host/…``: the password (in the user part or the query)
    replaced by ``***``; the user, host and database stay, since they say where
    the store is. Text that is not a ``scheme://`` URL is returned unchanged."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url
    query = rest.find("?")
    end = len(rest) if query < 0 else query
    # The last "@" before the query ends the user part: a password may hold "@" or "/".
    at = -1 if scheme.startswith("sqlite") else rest.rfind("@", 0, end)  # a path, not a user
    if at >= 0:
        user, colon, _password = rest[:at].partition(":")
        if colon:
            rest = f"{user}:{MASK}{rest[at:]}"
    if "?" in rest:
        rest = _QUERY_SECRET.sub(lambda match: match.group(1) + MASK, rest)
    return f"{scheme}://{rest}"
