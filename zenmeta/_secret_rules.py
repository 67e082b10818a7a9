"""The secret-detection rules: what a secret looks like, and masking it in text.

``Rules`` holds one compiled rule set (the built-in formats plus whatever
``configure(redact=...)`` added) with the caches that make it cheap: a
verdict per key and per short text, so that the values a step logs at every
call meet the regular expressions once. ``_redaction`` walks recorded values
with it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ._errors import ConfigurationError

__all__ = ["MARKER", "Rules", "DEFAULT_RULES", "OFF", "SHORTEST_SECRET"]

MARKER = "***"
"""What a hidden secret is replaced by."""

# Names that make a key (or a URL/command-line parameter) secret, matched as
# case-insensitive substrings. ``token`` followed by ``s``/``iz``/``is`` is
# excluded: ``max_tokens`` and ``tokenizer`` are everyday ML settings.
_SECRET_NAMES = r"token(?!s|iz|is)|secret|password|passwd|api[_-]?key|credential|private[_-]?key"

# (rule name, pattern, replacement); replacements keep what helps a reader
# recognise the value (the scheme and user of a URL, a token's kind).
_FORMATS: tuple[tuple[str, str], ...] = (
    (
        "private key",
        r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END[A-Z0-9 ]*PRIVATE KEY-----|\Z)",
    ),
    (
        "url credentials",
        r"(?P<url>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^\s/?#@:]*)(?P<pw>:[^\s/?#@]*)?@",
    ),
    (
        "secret parameter",
        # A name containing a secret word (``db_password=``, ``--api-key=``), or
        # exactly one of the short ones (``sig=``, not ``design=``).
        r"(?P<param>(?<![A-Za-z0-9_.\-])(?:[A-Za-z0-9_.\-]*(?i:"
        + _SECRET_NAMES
        + r"|access[_-]?key)[A-Za-z0-9_.\-]*|(?i:pwd|sig|signature|auth))=)(?!=)[^\s&#;,'\"]+",
    ),
    ("aws access key id", r"(?<![A-Z0-9])(?P<aws>AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])"),
    ("github token", r"(?P<gh>gh[pousr]_|github_pat_)[A-Za-z0-9_]{20,}"),
    ("slack token", r"(?P<slack>xox[baprs]-)[A-Za-z0-9\-]{8,}"),
    ("jwt", r"eyJ[A-Za-z0-9_\-]{4,}\.eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*"),
)
_FORMAT_NAMES = {f"r{index}": name for index, (name, _) in enumerate(_FORMATS)}
_compiled: list[re.Pattern[str]] = []  # [secret key names, all formats], on first use


def _patterns() -> list[re.Pattern[str]]:
    """Compiled when first needed: compiling costs ~1 ms that ``import zenmeta`` should not pay."""
    if not _compiled:
        _compiled[:] = [
            re.compile(_SECRET_NAMES, re.IGNORECASE),
            re.compile(
                "|".join(f"(?P<r{index}>{pattern})" for index, (_, pattern) in enumerate(_FORMATS)),
                re.DOTALL,
            ),
        ]
    return _compiled


SHORTEST_SECRET = 8  # "a://b@c/" or "?token=x"; shorter strings hold none
_CACHED_LENGTH = 200
_CACHE_LIMIT = 4096


def _triggered(text: str) -> bool:
    """Every built-in format needs one of these characters or prefixes."""
    return (
        "@" in text
        or "=" in text
        or "AKIA" in text
        or "ASIA" in text
        or ("gh" in text and "_" in text)
        or "xox" in text
        or "eyJ" in text
        or "-----BEGIN" in text
    )


class Rules:
    """A compiled rule set; ``DEFAULT_RULES`` unless configured otherwise."""

    __slots__ = (
        "_names",
        "_strings",
        "allowed",
        "enabled",
        "extra",
        "known_keys",
        "plain",
        "secret_keys",
        "spec",
    )

    def __init__(
        self,
        *,
        enabled: bool = True,
        patterns: Sequence[str] = (),
        allow_keys: Sequence[str] = (),
        secret_keys: Sequence[str] = (),
        spec: object = None,
    ) -> None:
        self.enabled = enabled
        self.spec = spec
        self.allowed = frozenset(key.lower() for key in allow_keys)
        self.secret_keys = tuple(secret_keys)
        try:
            self.extra = tuple(re.compile(pattern) for pattern in patterns)
        except re.error as error:
            raise ConfigurationError(f"a redaction pattern does not compile: {error}") from None
        # No extra pattern: a value under a key judged clean needs no screening.
        self.plain = enabled and not self.extra
        # Keys judged so far, True when one needs attention (its name or its
        # own text): the encoder's fast path skips values under a False one,
        # and codec.encode_plain stores them unchecked: only keys a set has
        # stored (text of a valid length) are ever judged.
        self.known_keys: dict[str, bool] = {}
        self._names: dict[str, bool] = {}  # names a secret
        self._strings: dict[str, bool] = {}

    # -- keys ---------------------------------------------------------------
    def is_secret_key(self, key: str) -> bool:
        """Whether values under ``key`` are hidden whole (cached per key)."""
        verdict = self._names.get(key)
        if verdict is None:
            lowered = key.lower()
            verdict = lowered not in self.allowed and (
                _patterns()[0].search(key) is not None
                or any(name.lower() in lowered for name in self.secret_keys)
            )
            if len(self._names) >= _CACHE_LIMIT:
                self._names.clear()
            self._names[key] = verdict
        return verdict

    def needs_attention(self, key: str) -> bool:
        """Whether ``key`` names a secret or holds one in its own text; a
        ``False`` here lets the encoder skip its values' fast-path checks."""
        verdict = self.known_keys.get(key)
        if verdict is None:
            verdict = self.is_secret_key(key) or bool(self.mask_text(key)[1])
            if len(self.known_keys) >= _CACHE_LIMIT:
                self.known_keys.clear()
            self.known_keys[key] = verdict
        return verdict

    # -- strings ------------------------------------------------------------
    def may_hold_secret(self, text: str) -> bool:
        """The fast path: ``False`` means no rule can match ``text``."""
        if self.extra:
            return True
        if len(text) < SHORTEST_SECRET:
            return False
        if len(text) <= _CACHED_LENGTH:
            seen = self._strings.get(text)
            if seen is not None:
                return seen
            verdict = _triggered(text) and _patterns()[1].search(text) is not None
            if len(self._strings) >= _CACHE_LIMIT:
                self._strings.clear()
            self._strings[text] = verdict
            return verdict
        return _triggered(text)

    def mask_text(self, text: str) -> tuple[str, list[str]]:
        """``text`` with every secret masked, and the rules that fired."""
        fired: list[str] = []
        if self.may_hold_secret(text):
            text = _patterns()[1].sub(lambda match: _mask(match, fired), text)
            for index, pattern in enumerate(self.extra, 1):
                text, count = pattern.subn(MARKER, text)
                if count:
                    fired.append(f"pattern {index}")
        return text, fired


def _mask(match: re.Match[str], fired: list[str]) -> str:
    rule = _FORMAT_NAMES[match.lastgroup or ""]
    shown = _masked(match, rule)
    # Masking is idempotent: an already masked value fires no rule again, so
    # ``store scan`` finds nothing left after ``--fix``.
    if shown != match.group(0) and rule not in fired:
        fired.append(rule)
    return shown


def _masked(match: re.Match[str], rule: str) -> str:
    groups = match.groupdict()
    if rule == "url credentials":
        # With a password, the user stays (it says who connected); a lone
        # user part is often a token itself (https://ghp_…@github.com).
        if groups["pw"] is not None:
            return f"{groups['url']}{groups['user']}:{MARKER}@"
        return f"{groups['url']}{MARKER}@"
    if rule == "secret parameter":
        return f"{groups['param']}{MARKER}"
    for prefix in ("aws", "gh", "slack"):
        if groups.get(prefix):
            return f"{groups[prefix]}{MARKER}"
    if rule == "private key":
        return f"-----BEGIN PRIVATE KEY-----{MARKER}-----END PRIVATE KEY-----"
    return MARKER


DEFAULT_RULES = Rules(spec=True)
OFF = Rules(enabled=False, spec=False)
