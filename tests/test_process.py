"""``zenmeta._process``: a minted process id (new after fork) and the machine's marks."""

from __future__ import annotations

import os
import subprocess
import sys

from zenmeta import _process

_FORKS = """
import os
from zenmeta import _process
before = _process.PROCESS_ID
reading, writing = os.pipe()
child = os.fork()
if child == 0:
    os.write(writing, _process.PROCESS_ID.encode())
    os._exit(0)
os.close(writing)
forked = os.read(reading, 64).decode()
os.waitpid(child, 0)
assert _process.PROCESS_ID == before  # the parent keeps its own
print(before, forked)
"""


def test_the_process_id_is_minted_per_process_and_again_after_fork() -> None:
    """32 hex characters, not the pid; another process and a forked child each get their own."""
    own = _process.PROCESS_ID
    assert len(own) == 32 and int(own, 16) >= 0 and own != str(os.getpid())
    other = subprocess.run(
        [sys.executable, "-c", "from zenmeta import _process; print(_process.PROCESS_ID)"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    assert len(other) == 32 and other != own
    # Forked in a fresh interpreter: this one may have threads (a fork then warns).
    parent_id, child_id = subprocess.run(
        [sys.executable, "-c", _FORKS], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()  # fmt: skip
    assert len(child_id) == 32 and child_id != parent_id


def test_boot_id_and_pid_namespace_are_this_machines() -> None:
    """The kernel's boot id and the pid namespace's inode, as Linux gives them."""
    with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as found:
        assert _process.boot_id() == found.read().strip()
    assert _process.pid_namespace() == os.stat("/proc/self/ns/pid").st_ino
