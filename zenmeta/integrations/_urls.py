"""Showing a URL without the secrets people put into URLs."""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["has_credentials", "without_credentials"]


def has_credentials(url: str) -> bool:
    """Whether ``url`` carries what ``without_credentials`` takes out: a user, a
    password or a query (an unparsable URL is assumed to)."""
    if "://" not in url:
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return True
    return bool(parts.username or parts.password or parts.query or parts.fragment)


def without_credentials(url: str) -> str:
    """``url`` without user, password, query and fragment, for URLs with a scheme.

    Tokens hide in the user part (``https://ghp_…@github.com/…``) as often as
    in the password, and in query strings (``?private_token=``), so all of
    them go. Text that is not a ``scheme://`` URL is returned unchanged.
    """
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return url.split("://", 1)[0] + "://<unparsable>"
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    return f"{parts.scheme}://{netloc}{parts.path}"
