"""Redaction: masking secrets out of metadata, with the rules in effect.

Every value a component or user code records passes through ``redact_set``
before it is queued, and ``zenmeta store scan`` applies the same pass to
what is already stored, so both live here, in the vocabulary, where the
tracking core and the readers can both import them. What a secret looks
like is ``_secret_rules``; which rules apply (``configure(redact=...)``,
``ZENMETA_REDACT``) is decided here.

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

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ._config import environment
from ._errors import ConfigurationError
from ._secret_rules import DEFAULT_RULES, MARKER, OFF, SHORTEST_SECRET, Rules

if TYPE_CHECKING:
    from ._codec import MetadataSet

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

REDACTED_PREFIX = "redacted: "
"""How a redaction note's reason starts (a ``DroppedValue`` whose value was kept, masked)."""


Redaction = tuple[str, str]
"""One hidden value: where (a key path such as ``db.url`` or ``hosts[0]``)
and which rule hid it. A plain tuple: a named tuple class costs ~0.4 ms of
``import zenmeta``."""


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
    raw = environment("ZENMETA_REDACT")
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


def redact_set(target: MetadataSet, keys: Iterable[Any], rules: Rules) -> list[Redaction]:
    """Mask secrets in ``target``'s values for ``keys`` (encoded, JSON-ready
    values), in place; the redactions made, by key path and rule.

    The tracking core passes only the keys ``encode_metadata`` flagged as
    possible holders of a secret; a scan passes every key, so a number or a
    short word under a key already judged clean is still skipped cheaply.
    """
    found: list[Redaction] = []
    values = target.values
    known = rules.known_keys
    short = 0 if rules.extra else SHORTEST_SECRET
    for key in keys:
        if known.get(key) is False:
            value = values.get(key)
            kind = type(value)
            if kind is float or kind is int or value is None or value is True or value is False:
                continue
            if kind is str and len(value) < short:
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
            found.extend((path, rule) for rule in fired)
    value = values[path]
    if rules.is_secret_key(key):
        if value is not None and value != "" and value != MARKER:
            values[path] = MARKER
            types[path] = "str"
            found.append((path, "secret key"))
        return
    kind = type(value)
    if kind is str:
        masked, fired = rules.mask_text(value)
        if fired:
            values[path] = masked
            found.extend((path, rule) for rule in fired)
    elif kind is dict or kind is list:
        values[path] = _walk(value, path, rules, found)


def _walk(value: Any, path: str, rules: Rules, found: list[Redaction]) -> Any:
    """A copy of an encoded container with its secrets masked (the same
    object when nothing changed)."""
    if isinstance(value, list):
        changed = False
        items = []
        seen = rules._strings
        short = 0 if rules.extra else SHORTEST_SECRET
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
                found.extend((f"{path}.{new_key}", rule) for rule in fired)
            inner = f"{path}.{new_key}"
            if rules.is_secret_key(key) and item is not None and item != "" and item != MARKER:
                new = MARKER
                found.append((inner, "secret key"))
            else:
                new = _walk(item, inner, rules, found)
            changed = changed or new is not item or new_key != key
            result[new_key] = new
        return result if changed else value
    if isinstance(value, str) and rules.may_hold_secret(value):
        masked, fired = rules.mask_text(value)
        if fired:
            found.extend((path, rule) for rule in fired)
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
