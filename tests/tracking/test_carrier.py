"""The carrier and attaching to it, within one process: the parts that need no pool."""

from __future__ import annotations

import asyncio
import os
import pathlib
import pickle
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator

import cloudpickle
import pytest

import zenmeta
from zenmeta import (
    Carrier,
    CarrierError,
    NoActiveContextError,
    RunStateError,
    attach,
    attach_process,
    carried,
    carry,
    get_step_context,
    log_metadata,
    pipeline_run,
    track_step,
)
from zenmeta._tracking import context
from zenmeta._tracking.carrier import without_password
from zenmeta._tracking.reach import with_own_credentials
from zenmeta.testing import InMemoryStore


@track_step
def leaf(x: int) -> int:
    log_metadata({"x": x})
    return x + 1


def sqlite_url() -> str:
    return "sqlite:///" + str(pathlib.Path.cwd() / "carrier.db")


def test_carry_outside_a_run_is_a_clear_error() -> None:
    """carry() with no run says where to call it."""
    with pytest.raises(NoActiveContextError, match="outside a run"):
        carry()


def test_carrier_names_the_run_the_step_and_this_process(store: InMemoryStore) -> None:
    """Inside a step, the carrier's parent is that step; the owner is this process."""
    with pipeline_run("owner") as run:

        @track_step
        def outer() -> tuple[Carrier, uuid.UUID]:
            return carry(), get_step_context().step_run_id

        carrier, step_id = outer()
        between = carry()
    assert (carrier.run_id, carrier.run_name, carrier.pipeline) == (run.id, run.name, "owner")
    assert carrier.parent_step_id == step_id
    assert between.parent_step_id is None
    assert carrier.same_process() and carrier.same_machine()


def test_header_round_trips_and_is_safe_for_headers_and_environments() -> None:
    """to_header() is versioned, URL-safe text; from_header() gives the same carrier."""
    zenmeta.configure(store=sqlite_url())
    with pipeline_run("header"):
        carrier = carry()
    header = carrier.to_header()
    assert header.startswith("zm1.")
    assert all(c.isalnum() or c in "-_." for c in header), header
    assert Carrier.from_header(header) == carrier
    assert carrier.environ() == {"ZENMETA_PARENT": header}


@pytest.mark.parametrize(
    "header",
    ["", "hello", "zm1.!!!", "zm1." + "e30", "zm1.WzFd", "zm9.abc", "zm1." + "W251bGxd"],
)
def test_a_malformed_header_is_a_carrier_error(header: str) -> None:
    """Garbage, another version, or JSON that is not a carrier: CarrierError, a ValueError."""
    with pytest.raises(CarrierError) as raised:
        Carrier.from_header(header)
    assert isinstance(raised.value, ValueError)


def test_a_header_of_an_unknown_version_says_so() -> None:
    """A newer zenmeta's header names the version and the fix."""
    with pytest.raises(CarrierError, match="version 9"):
        Carrier.from_header("zm9.abcdef")


def test_the_carrier_never_holds_the_store_password() -> None:
    """Pickled, cloudpickled and as a header: the password is nowhere in it."""
    secret = "s3cr3t-Pa55"
    carrier = Carrier(
        uuid.uuid4(),
        "run",
        "pipe",
        None,
        without_password(f"postgresql+psycopg://alice:{secret}@db.example:5432/runs"),
        "host",
        "boot",
        1,
        "token",
    )
    assert carrier.store == "postgresql+psycopg://alice@db.example:5432/runs"
    for blob in (pickle.dumps(carrier), cloudpickle.dumps(carrier), carrier.to_header().encode()):
        assert secret.encode() not in blob
    assert secret not in repr(carrier)


def test_carry_strips_the_password_of_the_run_store(postgres_server: object) -> None:
    """A run on a password-protected PostgreSQL store carries its URL without it."""
    from _postgres import PostgresServer

    assert isinstance(postgres_server, PostgresServer)
    url = postgres_server.create_role_with_password("carrier_owner", "Owner-Secret-42")
    zenmeta.configure(store=url)
    with pipeline_run("pg"):
        carrier = carry()
    assert "Owner-Secret-42" not in carrier.store
    assert "carrier_owner@" in carrier.store
    for blob in (pickle.dumps(carrier), carrier.to_header().encode()):
        assert b"Owner-Secret-42" not in blob


def test_query_passwords_are_removed_too() -> None:
    """libpq's ?password= goes; the other parameters stay."""
    assert (
        without_password("postgresql://u@h/db?sslmode=require&password=x&application_name=a")
        == "postgresql://u@h/db?sslmode=require&application_name=a"
    )
    assert without_password("postgresql://u@h/db?password=x") == "postgresql://u@h/db"


def test_a_worker_uses_its_own_url_with_password_for_the_same_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker's ZENMETA_STORE naming the carried database lends its password."""
    carried_url = "postgresql+psycopg://alice@db.example:5432/runs"
    monkeypatch.setenv("ZENMETA_STORE", "postgresql://alice:pw@db.example:5432/runs")
    assert with_own_credentials(carried_url) == "postgresql://alice:pw@db.example:5432/runs"
    monkeypatch.setenv("ZENMETA_STORE", "postgresql://alice:pw@db.example:5432/other")
    assert with_own_credentials(carried_url) == carried_url


def test_steps_inside_attach_join_the_run_under_the_carried_step(store: InMemoryStore) -> None:
    """attach() in another thread: the steps land in the run, children of the carried step."""
    with pipeline_run("threads") as run:

        @track_step
        def parent() -> Carrier:
            return carry()

        carrier = parent()
        done: list[int] = []

        def worker() -> None:
            with attach(carrier):
                done.append(leaf(1))
                done.append(leaf(2))

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
    assert done == [2, 3]
    steps = store.list_steps(run.id)
    parent_step = next(s for s in steps if s.step_name == "parent")
    leaves = [s for s in steps if s.step_name == "leaf"]
    assert len(leaves) == 2
    assert {s.parent_step_run_id for s in leaves} == {parent_step.id}
    assert len({s.name for s in leaves}) == 2
    assert all(s.name.startswith("leaf@") for s in leaves)
    assert len(store.list_runs()) == 1  # no implicit run


def test_attach_restores_the_context_after_the_block(store: InMemoryStore) -> None:
    """After attach() exits, no run is current again: nothing leaks into later calls."""
    with pipeline_run("scoped"):
        carrier = carry()
    with attach(carrier) as attached:
        assert attached.remote and attached.id == carrier.run_id
        assert context.current_attachment() is not None
    assert context.current_run() is None
    assert context.current_attachment() is None


def test_run_metadata_from_an_attached_block_is_refused_clearly(store: InMemoryStore) -> None:
    """log_metadata() for the run in an attached block raises RunStateError naming why."""
    with pipeline_run("refuse"):
        carrier = carry()
    with attach(carrier), pytest.raises(RunStateError, match="owned by process"):
        log_metadata({"a": 1})


def test_carried_calls_join_the_run_and_pickle_both_ways(store: InMemoryStore) -> None:
    """carried(fn) works called here, and survives pickle and cloudpickle."""
    with pipeline_run("wrapped") as run:
        wrapped = carried(leaf)
    assert wrapped(1) == 2
    assert pickle.loads(pickle.dumps(wrapped))(2) == 3
    assert cloudpickle.loads(cloudpickle.dumps(wrapped))(3) == 4
    assert wrapped.__name__ == "leaf"
    assert len(store.list_steps(run.id)) == 3
    assert len(store.list_runs()) == 1


def test_carried_tokens_are_deterministic_and_differ_per_run_and_parent(
    store: InMemoryStore,
) -> None:
    """__dask_tokenize__ is the same for equal wrappers, another for another run or parent."""
    with pipeline_run("tokens"):
        first = carried(leaf)
        again = pickle.loads(pickle.dumps(first))

        @track_step
        def inner() -> zenmeta._tracking.attach.Carried[[int], int]:
            return carried(leaf)

        under_step = inner()
    with pipeline_run("tokens"):
        other_run = carried(leaf)
    token = first.__dask_tokenize__()
    assert again.__dask_tokenize__() == token
    assert under_step.__dask_tokenize__() != token
    assert other_run.__dask_tokenize__() != token
    assert first.carrier.run_id.hex in token


def test_attach_process_makes_later_steps_join_the_run(store: InMemoryStore) -> None:
    """An initializer-style attach: steps with no run of their own join the carried one."""
    with pipeline_run("process") as run:
        carrier = carry()
    attach_process(carrier)
    leaf(5)
    assert [s.step_name for s in store.list_steps(run.id)] == ["leaf"]
    assert len(store.list_runs()) == 1


def test_zenmeta_parent_in_the_environment_attaches_the_first_step(
    store: InMemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ZENMETA_PARENT is read lazily, at the first step that finds no run."""
    with pipeline_run("env") as run:
        carrier = carry()
    monkeypatch.setenv("ZENMETA_PARENT", carrier.to_header())
    leaf(1)
    leaf(2)
    assert len(store.list_steps(run.id)) == 2
    assert len(store.list_runs()) == 1


def test_a_malformed_zenmeta_parent_is_a_warning_not_a_crash(
    store: InMemoryStore, monkeypatch: pytest.MonkeyPatch, zenmeta_log: pytest.LogCaptureFixture
) -> None:
    """A garbage ZENMETA_PARENT is warned about; the step still runs (in an implicit run)."""
    monkeypatch.setenv("ZENMETA_PARENT", "zm1.garbage")
    assert leaf(1) == 2
    assert "ZENMETA_PARENT" in zenmeta_log.text
    assert len(store.list_runs()) == 1  # today's behaviour: the step's own implicit run


def foreign(carrier: Carrier, **changes: object) -> Carrier:
    return carrier._replace(**changes)  # type: ignore[arg-type]


def test_a_sqlite_carrier_from_another_machine_is_refused() -> None:
    """A SQLite file carried to another boot (another machine) is refused, naming both."""
    zenmeta.configure(store=sqlite_url())
    with pipeline_run("sqlite"):
        carrier = carry()
    elsewhere = foreign(carrier, owner_host="far-away", owner_boot_id="00000000-other-boot")
    with pytest.raises(CarrierError, match="SQLite file") as refused, attach(elsewhere):
        pass
    assert "far-away" in str(refused.value)
    stray = pathlib.Path.cwd() / "stray.db"
    assert not stray.exists()


def test_a_memory_carrier_in_another_process_is_refused(store: InMemoryStore) -> None:
    """memory:// lives in its owner's memory: another process is refused."""
    with pipeline_run("memory"):
        carrier = carry()
    other = foreign(carrier, owner_pid=carrier.owner_pid + 1, owner_process="another")
    with pytest.raises(CarrierError, match="memory"):
        carried(leaf, other)(1)


def test_components_carry_state_to_the_attached_side() -> None:
    """get_carried_state() on the owner's side reaches attach_carried_state() in a worker."""
    seen: list[tuple[uuid.UUID, dict[str, str]]] = []

    class Carrying(zenmeta.StackComponent):
        def get_carried_state(self, run_id: uuid.UUID) -> dict[str, str]:
            return {"parent": f"p-{run_id.hex[:4]}"}

        def attach_carried_state(self, run_id: uuid.UUID, state: dict[str, str]) -> None:
            seen.append((run_id, dict(state)))

    zenmeta.configure(store=sqlite_url())
    zenmeta.register_component(Carrying("carrying"))
    with pipeline_run("state") as run:
        carrier = carry()
    assert carrier.component_state == {"carrying": {"parent": f"p-{run.id.hex[:4]}"}}
    # another process of this machine: the worker's own stack gets the state, once
    worker_side = foreign(carrier, owner_pid=carrier.owner_pid + 1, owner_process="another")
    with attach(worker_side):
        leaf(1)
    with attach(worker_side):
        leaf(2)
    assert seen == [(run.id, {"parent": f"p-{run.id.hex[:4]}"})]


def test_a_sqlite_carrier_whose_file_is_missing_here_is_refused() -> None:
    """Same machine, but the file is not there (another container): refused, nothing created."""
    zenmeta.configure(store=sqlite_url())
    with pipeline_run("container"):
        carrier = carry()
    missing = pathlib.Path.cwd() / "elsewhere" / "zenmeta.db"
    other = foreign(
        carrier, store=f"sqlite:///{missing}", owner_pid=carrier.owner_pid + 1, owner_process="x"
    )
    with pytest.raises(CarrierError, match="does not exist here"):
        carried(leaf, other)(1)
    assert not missing.parent.exists()


def test_closure_and_generator_steps_ship_by_value_with_cloudpickle(
    store: InMemoryStore,
) -> None:
    """Steps that cloudpickle must copy by value (closures) pickle and run on the other side."""
    offset = 10

    @track_step
    def closure_step(x: int) -> int:
        return x + offset

    @track_step
    def generator_step(n: int) -> Iterator[int]:
        yield from range(n)

    @track_step
    async def async_step(x: int) -> int:
        return x * 2

    shipped = cloudpickle.loads(cloudpickle.dumps((closure_step, generator_step, async_step)))
    with pipeline_run("by-value") as run:
        assert shipped[0](1) == 11
        assert list(shipped[1](3)) == [0, 1, 2]
        assert asyncio.run(shipped[2](4)) == 8
    names = sorted(s.step_name for s in store.list_steps(run.id))
    assert names == ["async_step", "closure_step", "generator_step"]


def test_a_carried_by_value_step_ships_as_its_function_and_configuration(
    store: InMemoryStore,
) -> None:
    """A closure's carried step goes as the user's function plus the step's
    name, settings and components, decorated again on arrival: not the
    wrapper's own code (which tripled what Dask pickled per task)."""
    offset = 10

    @track_step(name="shifted", settings={"gpu": False}, components=[])
    def closure_step(x: int) -> int:
        assert get_step_context().config.name == "shifted"
        assert dict(get_step_context().config.settings) == {"gpu": False}
        return x + offset

    with pipeline_run("by-value") as run:
        wrapped = carried(closure_step)
    blob = cloudpickle.dumps(wrapped)
    assert b"call_step" not in blob  # the wrapper's code is not in it
    assert len(blob) < len(cloudpickle.dumps(closure_step))
    shipped = cloudpickle.loads(blob)
    assert shipped(1) == 11
    assert shipped.fn.__zenmeta_step__ == closure_step.__zenmeta_step__  # type: ignore[attr-defined]
    (step,) = store.list_steps(run.id)
    assert step.step_name == "shifted"


def test_an_importable_carried_step_still_ships_by_reference(store: InMemoryStore) -> None:
    """A step its module names (``leaf`` here) goes by reference, wrapper and all:
    plain pickle could not ship the undecorated function by value."""
    with pipeline_run("by-reference"):
        wrapped = carried(leaf)
    blob = pickle.dumps(wrapped)
    assert pickle.loads(blob).fn is leaf
    assert b"leaf" in blob and b"call_step" not in blob


_MAIN_STEP = """
import pickle, sys
import cloudpickle
import zenmeta


@zenmeta.track_step
def square(x):
    return x * x


with zenmeta.pipeline_run("main"):
    wrapped = zenmeta.carried(square)
by_name = pickle.dumps(wrapped)  # what a spawn pool sends: __main__.square by name
by_value = cloudpickle.dumps(wrapped)  # what Dask and Ray send: the function by value
print(b"square" in by_name, b"call_step" in by_name, b"call_step" in by_value)
print(pickle.loads(by_name)(3), pickle.loads(by_value)(4))
"""


def test_a_carried_step_of_main_ships_by_name_with_pickle_and_by_value_with_cloudpickle(
    tmp_path: pathlib.Path,
) -> None:
    """A script's step: pickle names it (the spawned worker re-imports the
    script), cloudpickle sends the user's function, never the wrapper's code."""
    script = tmp_path / "script.py"
    script.write_text(_MAIN_STEP)
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "ZENMETA_STORE": "memory://"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "False", "False", "9", "16"]
