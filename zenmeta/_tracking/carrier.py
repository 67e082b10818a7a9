"""The carrier: a run and a parent step as plain data, to hand to another process.

Contexts never travel (``contextvars.Context`` cannot be pickled); a carrier
does: a frozen value with the run's id and name, the pipeline, the step that
is the parent of remote steps, the store's URL *without its password*, the
owner process, and what components chose to carry (MLflow's parent run). It
pickles as ``zenmeta.Carrier`` and has a text form (``to_header()``), short,
versioned and made of URL-safe characters, for an HTTP header or an
environment variable (``environ()`` gives ``ZENMETA_PARENT``), as
OpenTelemetry's ``traceparent`` and MLflow's ``MLFLOW_RUN_ID`` travel.

A password is never carried: a worker brings its own credentials (its own
``ZENMETA_STORE`` naming the same database, or libpq's ``PGPASSWORD`` and
``.pgpass``), so a carrier can sit in a task payload, a Dask annotation the
scheduler sees, or a process listing without giving the store away.
"""

from __future__ import annotations

import json
import os
import re
from typing import TYPE_CHECKING, Any, NamedTuple

from .._errors import CarrierError
from .._process import CURRENT_PID, host_name

if TYPE_CHECKING:
    from collections.abc import Mapping
    from uuid import UUID

__all__ = [
    "CARRIER_VARIABLE",
    "Carrier",
    "CarrierError",
    "boot_id",
    "process_token",
    "TOKEN_DIGITS",
    "without_password",
]

CARRIER_VARIABLE = "ZENMETA_PARENT"
"""The environment variable a subprocess reads its carrier from."""

HEADER_VERSION = 1
_PREFIX = f"zm{HEADER_VERSION}."
_VERSIONED = re.compile(r"zm(\d+)\.")
_MAX_HEADER = 16_384  # far above any real carrier; a bound against garbage
_USER_PASSWORD = re.compile(r"^([^:/?#]*):[^@]*@")
_QUERY_PASSWORD = re.compile(r"([?&])(?:password|passwd|pwd)=[^&#]*&?", re.IGNORECASE)


def without_password(url: str) -> str:
    """``url`` with its password removed, user and host kept: the worker's
    own credentials fill it in. ``postgresql://u:pw@h/db`` → ``postgresql://u@h/db``;
    a ``password=`` query parameter (libpq's spelling) goes too."""
    scheme, separator, rest = url.partition("://")
    if not separator or scheme.lower().startswith("sqlite"):
        return url  # a path: an "@" there is part of a file name
    query = rest.find("?")
    end = len(rest) if query < 0 else query
    at = rest.rfind("@", 0, end)  # a password may hold "@" or "/"
    if at >= 0:
        user = rest[:at].partition(":")[0]
        rest = f"{user}{rest[at:]}"
    if "?" in rest:
        rest = _QUERY_PASSWORD.sub(lambda m: m.group(1), rest).rstrip("?&")
    return f"{scheme}://{rest}"


_boot: list[str] = []


def boot_id() -> str:
    """This machine's boot id (Linux), else ``""``: a host name is not a
    machine (containers share them), a boot id is one boot of one kernel."""
    if not _boot:
        try:
            with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as file:
                _boot.append(file.read().strip())
        except OSError:
            _boot.append("")
    return _boot[0]


_token: list[str] = []


def process_token() -> str:
    """This process's id: the liveness records' ``PROCESS_ID`` where it exists,
    else a random hex id minted on first use; anew after ``fork`` either way.
    Step names of remote steps carry its first ``TOKEN_DIGITS`` digits, so no
    two processes, on any host, name a step alike (pids repeat across hosts)."""
    if not _token:
        from .. import _process

        shared = getattr(_process, "PROCESS_ID", None)
        if isinstance(shared, list):
            shared = shared[0] if shared else None
        _token.append(shared if isinstance(shared, str) and shared else os.urandom(8).hex())
    return _token[0]


TOKEN_DIGITS = 12
"""48 random bits: two of a million processes in one run share a tag about
once in 500 such runs; and step names need not be unique for correctness
(steps are keyed by id), only for reading."""


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_token.clear)


class Carrier(NamedTuple):
    """A run and a parent step, as plain data for another process or thread.

    Get one with ``zenmeta.carry()``; hand it over pickled, as a header
    (``to_header()``) or in a subprocess's environment (``environ()``);
    enter it with ``zenmeta.attach(carrier)`` there. It holds no password.
    A named tuple, so frozen and picklable as ``zenmeta.Carrier`` without
    ``dataclasses`` (which imports ``inspect``: more than zenmeta's import).
    """

    run_id: UUID
    run_name: str
    pipeline: str
    parent_step_id: UUID | None
    store: str
    """The run's store URL without its password."""
    owner_host: str
    owner_boot_id: str
    owner_pid: int
    owner_process: str
    """The owner's process token (``process_token()``): tells a forked child from its parent."""
    run_start_ns: int = 0
    components: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    """What each component carried (``get_carried_state``), by component name."""

    @property
    def component_state(self) -> dict[str, dict[str, str]]:
        """The carried component state as plain dictionaries."""
        return {name: dict(items) for name, items in self.components}

    def same_process(self) -> bool:
        """Whether this is the process that made the carrier (not a fork of it)."""
        return (
            self.owner_process == process_token()
            and self.owner_pid == CURRENT_PID[0]
            and self.owner_host == host_name()
        )

    def same_machine(self) -> bool:
        """Whether this process runs on the owner's machine, in the same boot."""
        here = boot_id()
        if here and self.owner_boot_id:
            return here == self.owner_boot_id
        return self.owner_host == host_name()  # no boot id to compare: the best left

    # -- the text form --------------------------------------------------------
    def to_header(self) -> str:
        """A compact text form: ``zm1.`` and URL-safe base64 of JSON, no padding.

        Safe in an HTTP header value and an environment variable."""
        fields: list[Any] = [
            self.run_id.hex,
            self.run_name,
            self.pipeline,
            None if self.parent_step_id is None else self.parent_step_id.hex,
            self.store,
            self.owner_host,
            self.owner_boot_id,
            self.owner_pid,
            self.owner_process,
            self.run_start_ns,
            {name: dict(items) for name, items in self.components},
        ]
        import base64  # on first use, not with zenmeta

        text = json.dumps(fields, separators=(",", ":"), ensure_ascii=True)
        return _PREFIX + base64.urlsafe_b64encode(text.encode("ascii")).decode().rstrip("=")

    @classmethod
    def from_header(cls, header: str) -> Carrier:
        """The carrier ``to_header()`` wrote; ``CarrierError`` (a ``ValueError``)
        naming what is wrong for anything else."""
        if not isinstance(header, str):
            raise CarrierError(f"a carrier header is text, not {type(header).__name__}")
        header = header.strip()
        if not header.startswith(_PREFIX):
            versioned = _VERSIONED.match(header)
            if versioned:
                raise CarrierError(
                    f"carrier header version {versioned.group(1)} is not known to this "
                    f"zenmeta (it reads version {HEADER_VERSION}); install the same zenmeta "
                    "version in the worker as in the process that carried the run"
                )
            raise CarrierError(
                f"not a zenmeta carrier header (it starts with {_PREFIX!r}): {header[:40]!r}"
            )
        if len(header) > _MAX_HEADER:
            raise CarrierError(f"carrier header of {len(header)} characters is too long")
        import base64

        body = header[len(_PREFIX) :]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            fields = json.loads(raw.decode("ascii"))
            return _from_fields(fields)
        except CarrierError:
            raise
        except (ValueError, TypeError, AttributeError) as error:
            raise CarrierError(f"carrier header cannot be read: {error}") from None

    def environ(self) -> dict[str, str]:
        """``{"ZENMETA_PARENT": header}``: merge it into a subprocess's environment,
        and that process's first step joins this run under this step."""
        return {CARRIER_VARIABLE: self.to_header()}

    def __repr__(self) -> str:
        parent = "" if self.parent_step_id is None else f" parent={self.parent_step_id}"
        return f"<Carrier run {self.run_name!r} id={self.run_id}{parent}>"


def _from_fields(fields: object) -> Carrier:
    if not isinstance(fields, list) or len(fields) != 11:
        raise CarrierError("carrier header cannot be read: not the fields of a carrier")
    run, name, pipeline, parent, store, host, boot, pid, process, start, components = fields
    texts = (name, pipeline, store, host, boot, process)
    if not all(isinstance(text, str) for text in texts):
        raise CarrierError("carrier header cannot be read: a text field is not text")
    if not isinstance(pid, int) or not isinstance(start, int) or isinstance(pid, bool):
        raise CarrierError("carrier header cannot be read: pid or start time is not a number")
    if not isinstance(components, dict) or not all(
        isinstance(state, dict) and all(isinstance(v, str) for v in state.values())
        for state in components.values()
    ):
        raise CarrierError("carrier header cannot be read: component state is not text")
    from uuid import UUID

    return Carrier(
        UUID(hex=run),
        name,
        pipeline,
        None if parent is None else UUID(hex=parent),
        store,
        host,
        boot,
        pid,
        process,
        start,
        frozen_state(components),
    )


def frozen_state(
    states: Mapping[str, Mapping[str, str]],
) -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
    """Component state as nested tuples, so a carrier stays frozen and hashable."""
    return tuple(
        (name, tuple(sorted((str(k), str(v)) for k, v in state.items())))
        for name, state in sorted(states.items())
    )
