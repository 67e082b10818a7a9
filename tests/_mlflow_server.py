"""A real ``mlflow server`` on a free loopback port, for the tests that need one.

Shared by ``tests/ui/test_dashboard_mlflow.py`` and
``tests/integrations/test_mlflow_secrets.py``. Nothing here is part of zenmeta.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path as FilePath

import httpx

__all__ = ["free_port", "mlflow_server"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@contextmanager
def mlflow_server(folder: FilePath) -> Iterator[str]:
    """Start ``mlflow server`` on 127.0.0.1 with its stores in ``folder``; its
    base URL until the block ends, when it is stopped with its workers."""
    port = free_port()
    mlflow = FilePath(sys.executable).parent / "mlflow"
    log = (folder / "server.log").open("wb")
    server = subprocess.Popen(
        [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder}/mlflow.db",
         "--default-artifact-root", str(folder / "artifacts")],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its uvicorn child goes down with it
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, (folder / "server.log").read_text()
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "mlflow server did not start in 90 s"
            time.sleep(0.25)
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
