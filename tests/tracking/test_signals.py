"""A process told to stop (SIGTERM) or dying of an uncaught error records its
runs honestly, in a real subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path as FilePath

import pytest

from zenmeta import Client

_TERMINATED = """
import sys, time, zenmeta
from zenmeta import pipeline_run, track_step

@track_step
def work(i):
    return i

with pipeline_run("served", run_name="served"):
    for i in range(50):
        work(i)
    print("ready", flush=True)
    time.sleep(60)
"""

_UNCAUGHT = """
import zenmeta
run = zenmeta.start_run("script", run_name="script")
raise ValueError("bad input")
"""

_OWN_HANDLER = """
import signal, sys, time, zenmeta
signal.signal(signal.SIGTERM, lambda *a: sys.exit(7))
with zenmeta.pipeline_run("own", run_name="own"):
    print("ready", flush=True)
    time.sleep(60)
"""


def _env(url: str) -> dict[str, str]:
    return {**os.environ, "ZENMETA_STORE": url, "ZENMETA_DURABILITY": "batched"}


@pytest.mark.slow
def test_sigterm_flushes_and_records_the_run_interrupted(tmp_path: FilePath) -> None:
    """`kill` (SIGTERM) mid-run: every step is kept, the run reads `interrupted`, exit 143."""
    url = f"sqlite:///{tmp_path}/runs.db"
    with subprocess.Popen(
        [sys.executable, "-c", _TERMINATED], stdout=subprocess.PIPE, text=True, env=_env(url)
    ) as child:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) == 143
    run = Client(url).get_run("served")
    assert run.status == "interrupted" and run.step_count == 50


@pytest.mark.slow
def test_a_handler_the_user_installed_is_left_alone(tmp_path: FilePath) -> None:
    """With the user's own SIGTERM handler, zenmeta installs none: theirs decides."""
    url = f"sqlite:///{tmp_path}/runs.db"
    with subprocess.Popen(
        [sys.executable, "-c", _OWN_HANDLER], stdout=subprocess.PIPE, text=True, env=_env(url)
    ) as child:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        time.sleep(0.1)
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) == 7
    assert Client(url).get_run("own").status == "interrupted"  # SystemExit(7), as ever


def test_an_uncaught_exception_fails_the_open_detached_run(tmp_path: FilePath) -> None:
    """A `start_run()` script dying of an error is recorded `failed`, with the error."""
    url = f"sqlite:///{tmp_path}/runs.db"
    done = subprocess.run(
        [sys.executable, "-c", _UNCAUGHT], capture_output=True, text=True, env=_env(url)
    )
    assert done.returncode == 1 and "ValueError: bad input" in done.stderr
    run = Client(url).get_run("script")
    assert (run.status, run.error_type, run.error_message) == ("failed", "ValueError", "bad input")
