"""The pytest plugin, driven by pytest's own pytester: in-memory by default,
the zenmeta_records fixture, the strict marker and --zenmeta-store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import zenmeta
import zenmeta._store.sql  # kept loaded: see below

# pytester restores sys.modules after each test, which would unload a
# SQLAlchemy first imported inside one (and break the next, which imports a
# second copy); imported here, it stays.
pytest_plugins = ["pytester"]

TRACKED = """
import os
import pytest
import zenmeta

@zenmeta.track_step
def train(rate):
    zenmeta.log_metadata({"accuracy": 0.9, "rate": rate})
    return rate

@zenmeta.track_step
def evaluate():
    return train(0.1)

class Exploding(zenmeta.StackComponent):
    flavor = "exploding"

    def get_step_run_metadata(self, info):
        raise RuntimeError("boom")
"""


def test_tracked_code_records_in_memory_by_default(pytester: pytest.Pytester) -> None:
    """A test calling a tracked function writes to memory, never to .zenmeta/."""
    pytester.makepyfile(
        TRACKED
        + """
def test_calls_a_tracked_function():
    train(0.5)
    assert os.environ["ZENMETA_STORE"] == "memory://pytest"
    [run] = zenmeta.Client().list_runs()
    assert run.pipeline_name == "train"
"""
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)
    assert not (pytester.path / ".zenmeta").exists()


def test_fixture_gives_the_tests_runs_and_steps(pytester: pytest.Pytester) -> None:
    """zenmeta_records reads runs by pipeline, steps by name, metadata by source,
    and resets zenmeta after each test."""
    pytester.makepyfile(
        TRACKED
        + """
def test_reads_what_it_recorded(zenmeta_records):
    with zenmeta.pipeline_run("training"):
        evaluate()
        train(0.2)
    train(0.3)
    assert [r.pipeline_name for r in zenmeta_records.runs] == ["training", "train"]
    [run] = zenmeta_records.pipeline("training")
    assert [s.name for s in zenmeta_records.steps_of(run)] == ["evaluate", "train", "train_2"]
    assert zenmeta_records.step("train_2").metadata["user"] == {"accuracy": 0.9, "rate": 0.2}
    assert len(zenmeta_records.steps_named("train")) == 3
    assert zenmeta_records.run("training").status == "completed"
    inner = zenmeta_records.steps_of(run)[1]
    assert inner.parent_step_run_id == zenmeta_records.step("evaluate").id
    zenmeta.register_component(Exploding())
    zenmeta.configure(strict=False)

def test_starts_clean(zenmeta_records):
    assert zenmeta_records.runs == []
    train(1.0)
    step = zenmeta_records.step("train")
    assert step.faults == ()  # the component registered before was removed
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=2)


def test_fixture_fails_clearly_when_one_step_is_expected(pytester: pytest.Pytester) -> None:
    """step(name) fails the test with a readable message when not exactly one matches."""
    pytester.makepyfile(
        TRACKED
        + """
def test_two_runs(zenmeta_records):
    train(1)
    train(2)
    zenmeta_records.run()
"""
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*expected one run, found 2*"])


def test_strict_marker_applies_to_one_test(pytester: pytest.Pytester) -> None:
    """@pytest.mark.zenmeta(strict=True) makes a failing component raise in that test only."""
    pytester.makepyfile(
        TRACKED
        + """
@pytest.mark.zenmeta(strict=True)
def test_strict(zenmeta_records):
    with pytest.raises(zenmeta.ComponentError, match="boom"):
        with zenmeta.pipeline_run("p", components=[Exploding()]):
            train(1)

def test_lenient(zenmeta_records):
    with zenmeta.pipeline_run("p", components=[Exploding()]):
        train(1)
    assert zenmeta_records.step("train").faults[0].message == "boom"
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=2)


def test_store_option_sends_runs_to_that_store(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """--zenmeta-store URL writes the tests' runs there instead of memory."""
    database = tmp_path / "tests.db"
    pytester.makepyfile(TRACKED + "\ndef test_one():\n    train(0.5)\n")
    result = pytester.runpytest_subprocess("--zenmeta-store", f"sqlite:///{database}")
    result.assert_outcomes(passed=1)
    zenmeta.flush()
    [run] = zenmeta.Client(f"sqlite:///{database}").list_runs()
    assert run.pipeline_name == "train"


def test_explicit_environment_variable_wins(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An explicit ZENMETA_STORE is kept under pytest, and restored afterwards."""
    url = f"sqlite:///{tmp_path / 'explicit.db'}"
    monkeypatch.setenv("ZENMETA_STORE", url)
    pytester.makepyfile(
        TRACKED + "\ndef test_one():\n    import os\n    assert os.environ['ZENMETA_STORE'] == "
        f"{url!r}\n    train(1)\n"
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=1)
    import os

    assert os.environ["ZENMETA_STORE"] == url
    zenmeta.flush()
    assert len(zenmeta.Client(url).list_runs()) == 1


def test_plugin_is_registered_and_imports_nothing_heavy() -> None:
    """The pytest11 entry point names the plugin, and importing it loads no
    SQLAlchemy or OpenTelemetry."""
    code = (
        "import sys, importlib.metadata as m; import zenmeta.pytest_plugin; "
        "print([e.value for e in m.entry_points(group='pytest11') if e.name == 'zenmeta'], "
        "[n for n in ('sqlalchemy', 'opentelemetry') if n in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "['zenmeta.pytest_plugin'] []"
