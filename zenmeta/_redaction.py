"""The redaction rules: what counts as a secret, and masking it out of metadata.

Every value a component or user code records passes through ``redact_set``
before it is queued, and ``zenmeta store scan`` applies the same rules to
what is already stored, so both live here, in the vocabulary, where the
tracking core and the readers can both import them.

Three kinds of rule: credentials in URLs (``postgresql://alice:***@db``) and
secret-named parameters (``?token=***``, ``--password=***``); values under
keys that name a secret (``api_key``, ``db_password``), replaced whole by
``***``; and strings in well-known secret formats (AWS access key ids,
GitHub and Slack tokens, JWTs, PEM private keys), masked wherever they
appear. Each redaction is reported as (key path, rule) so that the record
can say what was hidden and why.

Speed: a step's values are mostly numbers and short words. Numbers are
skipped by type, a key's verdict is cached (keys repeat at every step), and a
string only meets the regular expressions when it is long enough to hold a
secret and contains one of the characters or prefixes every rule needs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from ._codec import MetadataSet
from ._errors import ConfigurationError

__all__ = [
    "MARKER",
    "REDACTED_PREFIX",
    "Redaction",
    "Rules",
    "DEFAULT_RULES",
    "OFF",
    "parse_rules",
    "rules_from",
    "redact_set",
    "redact_value",
    "redact",
    "is_redaction_note",
]

MARKER = "***"
"""What a hidden secret is replaced by."""

REDACTED_PREFIX = "redacted: "
"""How a redaction note's reason starts (a ``DroppedValue`` whose value was kept, masked)."""

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


_SHORTEST_SECRET = 8  # "a://b@c/" or "?token=x"; shorter strings hold none
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


class Redaction(NamedTuple):
    """One hidden value: where (``key``, a path such as ``db.url`` or
    ``argv[3]``) and which rule hid it."""

    key: str
    rule: str


class Rules:
    """A compiled rule set; ``DEFAULT_RULES`` unless configured otherwise."""

    __slots__ = (
        "_keys",
        "_names",
        "_strings",
        "allowed",
        "enabled",
        "extra",
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
        self._keys: dict[str, bool] = {}  # needs attention (name or text)
        self._names: dict[str, bool] = {}  # names a secret
        self._strings: dict[str, bool] = {}

    # -- keys ---------------------------------------------------------------
    @property
    def known_keys(self) -> dict[str, bool]:
        """Keys judged so far: ``False`` for a clean one (see ``encode_metadata``)."""
        return self._keys

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
        verdict = self._keys.get(key)
        if verdict is None:
            verdict = self.is_secret_key(key) or bool(self.mask_text(key)[1])
            if len(self._keys) >= _CACHE_LIMIT:
                self._keys.clear()
            self._keys[key] = verdict
        return verdict

    # -- strings ------------------------------------------------------------
    def may_hold_secret(self, text: str) -> bool:
        """The fast path: ``False`` means no rule can match ``text``."""
        if self.extra:
            return True
        if len(text) < _SHORTEST_SECRET:
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


def parse_rules(spec: object) -> Rules:
    """Rules from a ``configure(redact=...)`` value or a ``ZENMETA_REDACT`` text.

    - ``True``/``None``/``"on"``/``""``: the built-in rules; ``False``/``"off"``: none.
    - A mapping with any of ``patterns`` (regular expressions, masked wherever
      they match), ``allow_keys`` (key names never hidden whole) and
      ``secret_keys`` (more names that make a key secret).
    - A text: entries separated by ``;``, each ``pattern=REGEX``,
      ``allow=KEY`` or ``key=NAME`` (``ZENMETA_REDACT="allow=token_count;key=pin"``).
    """
    if spec is None or spec is True:
        return DEFAULT_RULES
    if spec is False:
        return OFF
    if isinstance(spec, Rules):
        return spec
    if isinstance(spec, str):
        return _parse_text(spec)
    if isinstance(spec, Mapping):
        unknown = set(spec) - {"patterns", "allow_keys", "secret_keys"}
        if unknown:
            raise ConfigurationError(
                f"redact= takes patterns, allow_keys and secret_keys, not {sorted(unknown)}"
            )
        return Rules(
            patterns=_strings(spec.get("patterns", ()), "patterns"),
            allow_keys=_strings(spec.get("allow_keys", ()), "allow_keys"),
            secret_keys=_strings(spec.get("secret_keys", ()), "secret_keys"),
            spec=spec,
        )
    raise ConfigurationError(f"redact= takes a bool, a mapping or a text, not {spec!r}")


def _strings(value: object, name: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
        raise ConfigurationError(f"redact={{{name!r}: ...}} must be a list of strings")
    if not all(isinstance(item, str) for item in value):
        raise ConfigurationError(f"redact={{{name!r}: ...}} must be a list of strings")
    return tuple(value)


def _parse_text(text: str) -> Rules:
    stripped = text.strip()
    if stripped.lower() in ("", "1", "on", "true", "yes"):
        return DEFAULT_RULES
    if stripped.lower() in ("0", "off", "false", "no"):
        return OFF
    found: dict[str, list[str]] = {"pattern": [], "allow": [], "key": []}
    for entry in stripped.split(";"):
        if not entry.strip():
            continue
        kind, separator, value = entry.strip().partition("=")
        if not separator or kind not in found or not value:
            raise ConfigurationError(
                f"ZENMETA_REDACT entry {entry.strip()!r}: use pattern=REGEX, allow=KEY or "
                "key=NAME, separated by ';' (or 'off')"
            )
        found[kind].append(value)
    return Rules(
        patterns=found["pattern"],
        allow_keys=found["allow"],
        secret_keys=found["key"],
        spec=text,
    )


_from_environment: list[tuple[str | None, Rules]] = [(None, DEFAULT_RULES)]
_from_configuration: list[tuple[object, Rules]] = [(True, DEFAULT_RULES)]


def rules_from(configured: object) -> Rules:
    """The effective rules: ``configure(redact=...)``'s, else ``ZENMETA_REDACT``'s.

    The variable is parsed again only when its text changes.
    """
    if configured is not None:
        cached_spec, cached_rules = _from_configuration[0]
        if cached_spec is configured:
            return cached_rules
        rules = parse_rules(configured)
        _from_configuration[0] = (configured, rules)
        return rules
    raw = os.environ.get("ZENMETA_REDACT")
    cached = _from_environment[0]
    if cached[0] == raw:
        return cached[1]
    rules = DEFAULT_RULES if raw is None else _parse_text(raw)
    _from_environment[0] = (raw, rules)
    return rules


def is_redaction_note(reason: str) -> bool:
    """Whether a ``DroppedValue`` reason records a redaction (the value was kept, masked)."""
    return reason.startswith(REDACTED_PREFIX)


# -- walking encoded values ---------------------------------------------------


def redact_set(
    target: MetadataSet,
    keys: Iterable[Any],
    rules: Rules,
    *,
    _type: Any = type,
    _str: Any = str,
    _float: Any = float,
    _int: Any = int,
) -> list[Redaction]:
    """Mask secrets in ``target``'s values for ``keys`` (encoded, JSON-ready
    values), in place; the redactions made, by key path and rule.

    The loop is written for the common step (a few numbers and short words
    under keys seen before): one cached key verdict, one type check, and
    for a word its length. Measured: ~0.15 µs per such key.
    """
    found: list[Redaction] = []
    values = target.values
    known = rules._keys
    short = 0 if rules.extra else _SHORTEST_SECRET
    for key in keys:
        if known.get(key) is False:
            value = values.get(key)
            kind = _type(value)
            if kind is _float or kind is _int or value is None or value is True or value is False:
                continue
            if kind is _str and len(value) < short:
                continue
        _redact_key(target, key, rules, found)
    return found


def _redact_key(target: MetadataSet, key: Any, rules: Rules, found: list[Redaction]) -> None:
    values, types = target.values, target.types
    if key not in values or type(key) is not str:
        return  # dropped, or not a text key
    rules.needs_attention(key)  # judged once: the encoder's fast path skips it from now on
    path = key
    if rules.may_hold_secret(key):  # a token used as a key: the key itself is masked
        path, fired = rules.mask_text(key)
        if fired:
            values[path] = values.pop(key)
            types[path] = types.pop(key)
            found.extend(Redaction(path, rule) for rule in fired)
    value = values[path]
    if rules.is_secret_key(key):
        if value is not None and value != "" and value != MARKER:
            values[path] = MARKER
            types[path] = "str"
            found.append(Redaction(path, "secret key"))
        return
    kind = type(value)
    if kind is str:
        masked, fired = rules.mask_text(value)
        if fired:
            values[path] = masked
            found.extend(Redaction(path, rule) for rule in fired)
    elif kind is dict or kind is list:
        values[path] = _walk(value, path, rules, found)


def _walk(value: Any, path: str, rules: Rules, found: list[Redaction]) -> Any:
    """A copy of an encoded container with its secrets masked (the same
    object when nothing changed)."""
    if isinstance(value, list):
        changed = False
        items = []
        seen = rules._strings
        short = 0 if rules.extra else _SHORTEST_SECRET
        for index, item in enumerate(value):
            # Lists of words (package lists, command lines): skip known-clean text inline.
            if type(item) is str and (len(item) < short or seen.get(item) is False):
                items.append(item)
                continue
            new = _walk(item, f"{path}[{index}]", rules, found)
            changed = changed or new is not item
            items.append(new)
        return items if changed else value
    if isinstance(value, dict):
        changed = False
        result: dict[str, Any] = {}
        for key, item in value.items():
            if key.startswith("$") and len(value) == 1:  # a codec tag, not a key
                result[key] = new = _walk(item, path, rules, found)
                changed = changed or new is not item
                continue
            new_key = key
            if rules.may_hold_secret(key):
                new_key, fired = rules.mask_text(key)
                found.extend(Redaction(f"{path}.{new_key}", rule) for rule in fired)
            inner = f"{path}.{new_key}"
            if rules.is_secret_key(key) and item is not None and item != "" and item != MARKER:
                new = MARKER
                found.append(Redaction(inner, "secret key"))
            else:
                new = _walk(item, inner, rules, found)
            changed = changed or new is not item or new_key != key
            result[new_key] = new
        return result if changed else value
    if isinstance(value, str) and rules.may_hold_secret(value):
        masked, fired = rules.mask_text(value)
        if fired:
            found.extend(Redaction(path, rule) for rule in fired)
            return masked
    return value


def redact_value(value: Any, *, key: str | None = None, rules: Rules = DEFAULT_RULES) -> Any:
    """A plain value (text, or lists, tuples and dicts of them) with its
    secrets masked; ``key`` is the name it would be recorded under."""
    if not rules.enabled:
        return value
    if key is not None and rules.is_secret_key(key) and value not in (None, "", MARKER):
        return MARKER
    if isinstance(value, str):
        return rules.mask_text(value)[0]
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(item, rules=rules) for item in value)
    if isinstance(value, Mapping):
        return {k: redact_value(v, key=str(k), rules=rules) for k, v in value.items()}
    return value


def redact(value: Any, *, key: str | None = None) -> Any:
    """``value`` with secrets masked by the rules in effect now, as zenmeta
    would record it under ``key`` (text, or lists, tuples and dicts of it).

    For components that record text zenmeta cannot see the structure of: a
    command line's ``--password hunter2`` is two words, and only the caller
    knows the second is the first's value (``redact(words[i + 1], key=words[i])``).
    """
    from ._config import settings

    return redact_value(value, key=key, rules=settings.redaction())
