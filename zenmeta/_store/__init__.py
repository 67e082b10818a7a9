"""Which store a run writes to, how a store is named, and flushing every open store.

The store is resolved when each run starts, so changing ``ZENMETA_STORE``
between runs takes effect; an open store for the same URL is reused. Every
way of naming a store (``configure``, ``ZENMETA_STORE``, ``[tool.zenmeta]``,
``Client``, the CLI, the dashboard) passes through ``store_url``, so one
rule decides what a name means. Readers open stores with ``open_reader``,
which never creates or changes one. Store modules are imported only here
and only when used, which keeps ``import zenmeta`` free of SQLAlchemy.

Exporters (record sinks) are resolved at the same moment. With none
configured the run gets the bare store and a step pays nothing for the
feature; with some, the run's store is wrapped in a ``_FanOut`` that hands
each saved record to every sink too. A sink that raises is caught, warned
about once and recorded as a fault on the run: it never breaks a step.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, NamedTuple

from .._config import SUPPORTED_STORES, check_store_name, settings
from .._errors import ConfigurationError, StoreError, describe_error
from .._log import warn, warn_throttled
from .._project import absolute_path
from .._records import ComponentFault, RecordReader
from .._redact import masked_url

if TYPE_CHECKING:
    from .._records import RecordSink, RecordStore, RunRecord, StepRecord
    from .sql import SQLReader

__all__ = [
    "ACTIVE_STORES",
    "CopyCounts",
    "EXPORTERS_ENTRY_POINT_GROUP",
    "SUPPORTED_STORES",
    "close_stores",
    "copy_store",
    "flush",
    "flush_after_run",
    "wait_until_open",
    "flush_for_reading",
    "flush_stores",
    "open_reader",
    "readable",
    "open_store",
    "plain_steps_store",
    "report_store_fault",
    "resolve_store",
    "store_url",
    "use_store",
]

EXPORTERS_ENTRY_POINT_GROUP = "zenmeta.exporters"
"""Where ``ZENMETA_EXPORTERS=otlp`` looks a name up: a factory taking no arguments."""

ACTIVE_STORES = 8
"""Stores that keep their writer thread and connections between runs; the
least recently used one beyond this releases them (and gets them back on its
next write). A process writing to 1,000 stores in turn thus holds a few
threads and file descriptors, not thousands."""

_open: dict[str, RecordStore] = {}
_used: list[RecordStore] = []
_recent: OrderedDict[str, RecordStore] = OrderedDict()
_readers: OrderedDict[str, SQLReader] = OrderedDict()
"""Read-only stores by URL, reused (and bounded) like the writing ones."""
_lock = threading.RLock()
"""Reentrant: a store whose opening thread cannot start (the interpreter is
exiting) is opened within ``open_store``'s hold, and a failed open is
forgotten (``_open_failed``) under the same lock."""


def store_url(text: str) -> str:
    """The one rule for naming a store: ``text`` as the URL zenmeta opens.

    A plain path is a SQLite file (``~`` expanded, a relative path made
    absolute against the working folder); ``sqlite:///PATH`` gets the same
    treatment of its path; ``postgresql://…``, ``postgresql+psycopg://…``
    and ``memory://…`` are kept as given. Anything else raises ``StoreError``
    naming the supported forms.
    """
    found = check_store_name(text)  # an unsupported scheme raises here
    if found is None:
        if text.lower().startswith("memory:"):
            return text
        return "sqlite:///" + _absolute(text)  # a plain path, C:\\… on Windows included
    if found.group(1).lower() != "sqlite" or not text.startswith("///", found.end() - 2):
        return text
    path, mark, query = text[found.end() + 1 :].partition("?")
    if not path or path == ":memory:" or path.startswith("file:"):
        return text  # no file of its own: the SQL store says what it needs
    return "sqlite:///" + _absolute(path) + mark + query


def _absolute(path: str) -> str:
    return absolute_path(os.path.expanduser(path))


def open_store(url: str) -> RecordStore:
    """The open store for ``url`` (any name ``store_url`` takes), creating it
    on first use; the most recently used few keep their resources."""
    store = _open.get(url)  # a URL as store_url gives it: no need to parse it again
    if store is None:
        key = store_url(url)  # a relative path means the working folder of now
        with _lock:
            store = _open.get(key)
            if store is None:
                store = _open[key] = _create(key)
    _touch(getattr(store, "url", url), store)
    return store


def _touch(key: str, store: RecordStore) -> None:
    """Mark ``store`` as used now; release the least recently used beyond the bound."""
    try:
        if _recent and next(reversed(_recent)) == key and _recent.get(key) is store:
            return  # the most recent already: the common case, no lock
    except RuntimeError:  # another thread changed it just now: take the lock
        pass
    with _lock:
        if _recent.get(key) is not store:
            _recent[key] = store
        _recent.move_to_end(key)
        released = [_recent.popitem(last=False)[1] for _ in range(len(_recent) - ACTIVE_STORES)]
    for old in released:  # outside the lock: releasing writes what the store still holds
        release = getattr(old, "release", None)
        if callable(release):
            try:
                release()
            except Exception as error:
                report_store_fault(f"cannot release {old.url!r}", error)


def open_reader(url: str) -> RecordReader:
    """A store opened for reading only: nothing is created or changed.

    A store this process already writes to is returned as is (it sees its
    own queued records after a flush). Otherwise a missing SQLite file
    raises ``StoreNotFoundError`` naming it, and a file that is not a
    zenmeta store, or a server that cannot be reached, raises ``StoreError``
    in one line.
    """
    key = store_url(url)
    store = _open.get(key)
    if store is not None or key.lower().startswith("memory:"):
        return readable(open_store(key))
    with _lock:
        reader = _readers.get(key)
        if reader is not None:
            _readers.move_to_end(key)
            return reader
    try:
        from .sql import SQLReader
    except ImportError as error:  # pragma: no cover - SQLAlchemy is a dependency
        raise StoreError(f"no SQL store available for {key!r}: {error}") from error
    reader = SQLReader(key)
    with _lock:
        reader = _readers.setdefault(key, reader)
        released = [_readers.popitem(last=False)[1] for _ in range(len(_readers) - ACTIVE_STORES)]
    for old in released:  # their connections go; they are opened anew if read again
        old.close()
    return reader


def readable(store: object) -> RecordReader:
    """``store`` as a reader: itself, or the store an ``OpeningStore`` opens,
    once open. Its reads reach that store through ``__getattr__``, which
    Python 3.12's protocol ``isinstance`` no longer looks through (it looks
    attributes up statically): every read of this process's own store
    failed there."""
    from .opening import OpeningStore

    if isinstance(store, OpeningStore):
        store = store.opened_for_reading()
    if not isinstance(store, RecordReader):
        shown = getattr(store, "url", None) or repr(store)
        raise StoreError(f"{shown!r} cannot be read: it is not a RecordReader")
    return store


def plain_steps_store(store: RecordStore) -> Any:
    """Where a run hands its plain steps (``save_plain_step``), or ``None``
    if nowhere: the opened store itself once an ``OpeningStore`` is open, so
    that each step finds the method on its class (one specialized lookup;
    the opening store's forwarding attribute is looked up the generic way,
    ~300 instructions a step); until then the opening store, which forwards."""
    from .opening import OpeningStore

    if type(store) is OpeningStore and store._target is not None:
        store = store._target
    return store if hasattr(store, "save_plain_step") else None


def _create(url: str) -> RecordStore:
    if url.startswith("memory:"):
        from .memory import InMemoryStore

        return InMemoryStore(url)
    if url.startswith("sqlite:"):
        from .opening import OpeningStore, check_sqlite_folder

        if check_sqlite_folder(url):  # opened on a thread of its own (opening.py)
            return OpeningStore(url, _open_sql, _open_failed)
    if url.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
        # A server is opened here: a refused connection is reported as the run starts.
        return _open_sql(url)
    raise StoreError(f"unknown store URL {masked_url(url)!r}; use {SUPPORTED_STORES}")


def _open_sql(url: str) -> RecordStore:
    try:
        from .sql import SQLStore
    except ImportError as error:  # pragma: no cover - SQLAlchemy is a dependency
        raise StoreError(f"no SQL store available for {masked_url(url)!r}: {error}") from error
    return SQLStore(url)  # follows configure(durability=...) run by run


def _open_failed(store: RecordStore, error: BaseException) -> None:
    """A store that could not be opened in the background: forgotten (the next
    run tries again), and reported as a failed open always was."""
    with _lock:
        for key, found in list(_open.items()):
            if found is store:
                del _open[key]
                _recent.pop(key, None)
        if store in _used:
            _used.remove(store)
    with contextlib.suppress(StoreError):  # strict: the run that waited for it raises
        report_store_fault(f"cannot open store {store.url!r}", error)


class _UnavailableStore:
    """Stands in for a store that could not be opened; the fault was reported."""

    def __init__(self, url: str) -> None:
        self.url = masked_url(url)

    def save_run(self, record: RunRecord) -> None:
        pass

    def save_step(self, record: StepRecord) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def resolve_store() -> RecordStore:
    """The store for a run that starts now, with the configured sinks beside
    it; never raises outside strict mode."""
    sinks = _resolve_sinks()
    chosen = settings.store()
    store: RecordStore
    if not isinstance(chosen, str):
        store = chosen
    else:
        try:
            store = open_store(chosen)
            if getattr(store, "opening", False) and (
                settings.strict() or settings.durability() == "immediate"
            ):
                store.opened()  # type: ignore[attr-defined]  # both promise the store itself
        except Exception as error:
            report_store_fault(f"cannot open store {masked_url(chosen)!r}", error)
            store = _UnavailableStore(chosen)
    if not isinstance(store, _UnavailableStore):
        use_store(store)
    return _FanOut(store, sinks) if sinks else store


def use_store(store: RecordStore) -> RecordStore:
    """Count ``store`` among those ``flush()`` and ``flush_stores()`` write
    out: every run's store, and the store of a run attached from another
    process (opened by URL, not resolved for a run of this process)."""
    if store not in _used:
        with _lock:
            if store not in _used:
                _used.append(store)
    return store


# -- sinks: exporters fed beside the store -----------------------------------

_named_sinks: dict[str, RecordSink] = {}  # built from a name, kept until close_stores()
_failed_names: set[str] = set()  # a name that failed is not looked up at every run
_used_sinks: list[RecordSink] = []


class _FanOut:
    """A run's store with sinks beside it: each record goes to the store,
    then to every sink, on the caller's thread (sinks only queue it).

    A sink's failure becomes a ``ComponentFault`` (component ``exporter:NAME``,
    hook ``export``) carried by every later save of the run's record.
    """

    __slots__ = ("_faults", "sinks", "store", "url")

    def __init__(self, store: RecordStore, sinks: tuple[RecordSink, ...]) -> None:
        self.store = store
        self.sinks = sinks
        self.url = store.url
        self._faults: list[ComponentFault] = []

    def save_run(self, record: RunRecord) -> None:
        if self._faults:
            record = record._replace(faults=record.faults + tuple(self._faults))
        known = len(self._faults)
        try:
            self.store.save_run(record)
        finally:
            self._deliver(record)
        if len(self._faults) > known and record.end_ns is not None:
            # the final record itself failed to export: store the fault with it
            self.store.save_run(record._replace(faults=record.faults + tuple(self._faults[known:])))

    def save_step(self, record: StepRecord) -> None:
        try:
            self.store.save_step(record)
        finally:
            self._deliver(record)

    def flush(self) -> None:
        self.store.flush()

    def close(self) -> None:
        self.store.close()

    def _deliver(self, record: RunRecord | StepRecord) -> None:
        batch = (record,)
        for sink in self.sinks:
            try:
                sink.export(batch)
            except Exception as error:
                fault = ComponentFault(
                    f"exporter:{sink_name(sink)}", "export", type(error).__name__, str(error)
                )
                if fault not in self._faults:
                    self._faults.append(fault)
                report_sink_fault(f"exporter {sink_name(sink)!r} failed", error)


def sink_name(sink: object) -> str:
    """A sink's ``name`` attribute, else its class name."""
    name = getattr(sink, "name", None)
    return name if isinstance(name, str) and name else type(sink).__name__


def report_sink_fault(what: str, error: BaseException) -> None:
    """Warn (once per cause and interval) that a sink failed; raise if strict."""
    error_type, detail = describe_error(error)
    message = f"zenmeta: {what}: {error_type}: {detail}; records are still stored"
    if settings.strict():
        raise StoreError(message) from error
    warn_throttled(f"{what}: {error_type}: {detail}", "%s", message)


def _resolve_sinks() -> tuple[RecordSink, ...]:
    chosen = settings.exporters()
    if not chosen:
        return ()
    sinks: list[RecordSink] = []
    for item in chosen:
        if not isinstance(item, str):
            sinks.append(item)
            continue
        try:
            sink = _named_sink(item)
        except Exception as error:
            report_sink_fault(f"cannot create exporter {item!r}", error)
            continue
        if sink is not None:
            sinks.append(sink)
    with _lock:
        for sink in sinks:
            if sink not in _used_sinks:
                _used_sinks.append(sink)
    return tuple(sinks)


def _named_sink(name: str) -> RecordSink | None:
    """The sink an installed package declares under ``name``, built once."""
    sink = _named_sinks.get(name)
    if sink is not None or name in _failed_names:
        return sink
    import importlib.metadata  # ~25 ms: only when an exporter is named

    try:
        found = {
            entry_point.name: entry_point
            for entry_point in importlib.metadata.entry_points(group=EXPORTERS_ENTRY_POINT_GROUP)
        }
        if name not in found:
            known = ", ".join(sorted(found)) or "none installed"
            raise ConfigurationError(
                f"unknown exporter {name!r} (known exporters: {known}); a package provides "
                f"one under the entry-point group {EXPORTERS_ENTRY_POINT_GROUP!r}"
            )
        factory = found[name].load()
        created: RecordSink = factory()
    except Exception:
        _failed_names.add(name)
        raise
    with _lock:
        return _named_sinks.setdefault(name, created)


def report_store_fault(what: str, error: BaseException) -> None:
    """Warn (once per cause and interval) that records were not stored; raise if strict."""
    error_type, detail = describe_error(error)
    message = f"zenmeta: {what}: {error_type}: {detail}; the run goes on unrecorded"
    rules = settings.redaction()  # store URLs and driver errors name passwords
    if rules.enabled:
        message = rules.mask_text(message)[0]
    if settings.strict():
        raise StoreError(message) from error
    warn_throttled(f"{what}: {error_type}: {detail}", "%s", message)


def flush_stores() -> None:
    """Block until every record queued by this process is stored.

    What a run's end calls: sinks are left to deliver in their own time, so a
    slow or unreachable exporter never holds up the end of a run.
    """
    with _lock:
        stores = list(_used)
    for store in stores:
        try:
            store.flush()
        except StoreError:
            raise
        except Exception as error:
            report_store_fault(f"cannot flush {store.url!r}", error)


def wait_until_open(store: RecordStore) -> None:
    """Wait for a store opening in the background (a SQLite file is created
    then), so that what is handed to another process finds it. A failed open
    was reported by the opening thread; the receiver will say it is missing."""
    opened = getattr(store, "opened", None)
    if callable(opened):
        with contextlib.suppress(Exception):
            opened()


def flush_after_run() -> None:
    """What a run's end waits for. Batched: nothing, since the run's final
    record woke the writer, which writes it within milliseconds (a flush per
    run cost 6-8 OpenTelemetry spans, most of it the wait for the writer
    thread; ``flush()``, readers in this process and the exit still wait).
    Immediate or strict: every store, as before, so faults surface here."""
    if settings.strict() or settings.durability() == "immediate":
        flush_stores()


def flush_for_reading(reader: object) -> None:
    """Before a read in this process: write what this process queued for
    that store, so a reader sees its own open run. Costs nothing when the
    store has nothing queued (it says so through ``has_queued()``)."""
    url = getattr(reader, "url", None)
    stores = [reader]
    if isinstance(url, str):
        shown = masked_url(url)  # a configured store object is named by its shown URL
        with _lock:
            writing = [_open.get(url)] + [s for s in _used if getattr(s, "url", None) == shown]
        stores += [store for store in writing if store is not None and store is not reader]
    for store in {id(store): store for store in stores}.values():  # each once, in order
        has_queued = getattr(store, "has_queued", None)
        if callable(has_queued) and has_queued():
            try:
                store.flush()  # type: ignore[attr-defined]
            except Exception as error:
                report_store_fault(f"cannot flush {url or store!r}", error)


def flush(timeout_millis: int = 30_000) -> None:
    """Block until every record queued by this process is stored, and every
    exporter has delivered what it was given.

    ``timeout_millis`` is passed to each exporter's ``force_flush``; an
    exporter that is down is bounded by its own timeout (OpenTelemetry's
    ``BatchSpanProcessor`` waits for the export in progress).
    """
    flush_stores()
    with _lock:
        sinks = list(_used_sinks)
    for sink in sinks:
        try:
            sink.force_flush(timeout_millis)
        except Exception as error:
            report_sink_fault(f"exporter {sink_name(sink)!r} cannot flush", error)


class CopyCounts(NamedTuple):
    """What one ``copy_store`` wrote to its target: runs written (new, or
    updated to the source's state), new steps, and metadata sets written."""

    runs: int
    steps: int
    metadata_sets: int
    source: str = ""
    """The two stores as ``store_url`` named them, passwords masked."""
    target: str = ""


_SQL_SCHEMES = ("sqlite:", "postgresql:", "postgresql+")


def copy_store(source: str, target: str, since_ns: int | None = None) -> CopyCounts:
    """Copy runs, steps and metadata from one SQL store to another (see
    ``sql/sync.py``); this process's queued records are flushed first."""
    source, target = store_url(source), store_url(target)
    for url in (source, target):
        if not url.startswith(_SQL_SCHEMES):
            raise StoreError(
                f"cannot copy {masked_url(url)!r}: copies go between SQL stores "
                "(sqlite:///PATH, postgresql+psycopg://…)"
            )
    flush()
    from .sql.sync import copy_between

    counts = copy_between(source, target, since_ns)
    return counts._replace(source=masked_url(source), target=masked_url(target))


def close_stores() -> None:
    """Flush and close every store this process opened, and shut every
    exporter down; runs at exit."""
    with _lock:
        stores = list({id(store): store for store in _open.values()}.values())
        _open.clear()
        _used.clear()
        sinks = list(_used_sinks)
        _used_sinks.clear()
        _named_sinks.clear()
        _failed_names.clear()
        _recent.clear()
        stores += list(_readers.values())
        _readers.clear()
    for store in stores:
        try:
            store.close()
        except Exception as error:  # at exit there is nobody left to raise to
            warn("zenmeta: closing %r failed: %s", store.url, error)
    for sink in sinks:
        try:
            sink.shutdown()
        except Exception as error:
            warn("zenmeta: shutting exporter %r down failed: %s", sink_name(sink), error)


atexit.register(close_stores)


class _ForkedWorkerExit:
    """Key of zenmeta's entry in multiprocessing's after-fork registry."""

    registered = False


def _flush_when_worker_exits(_: object) -> None:
    # multiprocessing ends a forked worker with os._exit(), which skips
    # atexit; its own exit finalizers still run, so flush from one of them.
    import multiprocessing.util

    multiprocessing.util.Finalize(None, close_stores, exitpriority=100)


def _before_fork() -> None:
    """Only when multiprocessing is in use: it clears finalizers registered
    earlier, so ours is added by its after-fork hook, in the child."""
    util = sys.modules.get("multiprocessing.util")
    if util is not None and not _ForkedWorkerExit.registered:
        util.register_after_fork(_ForkedWorkerExit, _flush_when_worker_exits)
        _ForkedWorkerExit.registered = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork)
