"""A process told to stop (SIGTERM) or dying of an uncaught error records its
runs honestly, in a real subprocess."""

from __future__ import annotations

import json
import os
import select
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


_BORN = """
import json, signal, threading, zenmeta
from zenmeta import pipeline_run, track_step

born = {}
run = threading.Thread.run

def recording(self):
    born[self.name] = sorted(signal.pthread_sigmask(signal.SIG_BLOCK, ()))
    run(self)

threading.Thread.run = recording

@track_step
def work(i):
    return i

with pipeline_run("born", run_name="born"):
    work(1)
zenmeta.flush()
print(json.dumps(born))
"""

_STARTING_THREADS = """
import signal, threading, time
from zenmeta._process import start_quiet

def on_term(signum, frame):
    print("handled", flush=True)

signal.signal(signal.SIGTERM, on_term)

def start_threads():
    while True:
        thread = threading.Thread(target=lambda: None)
        start_quiet(thread)
        thread.join()

start_quiet(threading.Thread(target=start_threads, daemon=True))
print("ready", flush=True)
while True:
    time.sleep(60)
"""


def _env(url: str) -> dict[str, str]:
    return {**os.environ, "ZENMETA_STORE": url, "ZENMETA_DURABILITY": "batched"}


def _asleep(pid: int) -> None:
    """Wait (up to 10 s) until ``pid`` sleeps in ``time.sleep``: CPython cannot
    see a signal whose C handler ran just before the sleep began, until the
    sleep ends (any Python handler, Ctrl-C's too), so a test sending one as
    the child prints "ready" would be testing that race, not zenmeta."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/wchan") as wchan:
                if "nanosleep" in wchan.read():
                    return
        except OSError:  # no /proc: give the child a moment instead
            time.sleep(0.1)
            return
        time.sleep(0.001)


@pytest.mark.slow
def test_sigterm_flushes_and_records_the_run_interrupted(tmp_path: FilePath) -> None:
    """`kill` (SIGTERM) mid-run: every step is kept, the run reads `interrupted`, exit 143."""
    url = f"sqlite:///{tmp_path}/runs.db"
    with subprocess.Popen(
        [sys.executable, "-c", _TERMINATED], stdout=subprocess.PIPE, text=True, env=_env(url)
    ) as child:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        _asleep(child.pid)
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
        _asleep(child.pid)
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) == 7
    assert Client(url).get_run("own").status == "interrupted"  # SystemExit(7), as ever


def test_every_thread_zenmeta_starts_is_born_deaf_to_sigterm_and_sigint(
    tmp_path: FilePath,
) -> None:
    """Python handles signals only in the main thread; one the kernel handed to
    a thread of ours would leave a sleeping main thread asleep. So each is
    blocking both from its first line on (seen there, in a real process)."""
    url = f"sqlite:///{tmp_path}/runs.db"
    done = subprocess.run(
        [sys.executable, "-c", _BORN], capture_output=True, text=True, env=_env(url), check=True
    )
    born = json.loads(done.stdout)
    ours = {name: mask for name, mask in born.items() if name.startswith("zenmeta-")}
    assert {name.split()[0] for name in ours} == {"zenmeta-open", "zenmeta-writer"}
    for name, mask in ours.items():
        assert {signal.SIGTERM, signal.SIGINT} <= set(mask), name


@pytest.mark.slow
def test_sigterm_reaches_a_sleeping_main_thread_while_threads_start() -> None:
    """A thread changing its mask takes a pending signal (glibc's
    `pthread_create` does, and a plain thread born unblocked missed about 1
    SIGTERM in 3 here): started quiet, a thread that starts threads all the
    time never takes one, and each reaches the main thread's handler."""
    with subprocess.Popen(
        [sys.executable, "-c", _STARTING_THREADS], stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        try:
            for _ in range(20):
                _asleep(child.pid)
                child.send_signal(signal.SIGTERM)
                readable, _, _ = select.select([child.stdout], [], [], 10)
                assert readable, "SIGTERM never reached the main thread's handler"
                assert child.stdout.readline().strip() == "handled"
        finally:
            child.kill()


def test_an_uncaught_exception_fails_the_open_detached_run(tmp_path: FilePath) -> None:
    """A `start_run()` script dying of an error is recorded `failed`, with the error."""
    url = f"sqlite:///{tmp_path}/runs.db"
    done = subprocess.run(
        [sys.executable, "-c", _UNCAUGHT], capture_output=True, text=True, env=_env(url)
    )
    assert done.returncode == 1 and "ValueError: bad input" in done.stderr
    run = Client(url).get_run("script")
    assert (run.status, run.error_type, run.error_message) == ("failed", "ValueError", "bad input")
