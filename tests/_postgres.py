"""A throwaway PostgreSQL server on 127.0.0.1, for the tests and the benchmarks.

``initdb`` and ``pg_ctl`` refuse to run as root, so as root they run as
Debian's ``postgres`` user (``runuser``, no PAM or TTY), in a data folder
taken from ``tempfile.mkdtemp()`` (pytest's basetemp is 0700: the server
user could not enter it). Settings live in ``postgresql.conf`` so that a
``pg_ctl restart`` keeps them. Nothing here is part of zenmeta.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile

__all__ = ["PostgresServer", "UnavailableError", "find_bin_dir"]

SUPERUSER = "zenmeta"


class UnavailableError(RuntimeError):
    """PostgreSQL is not installed here and cannot be started."""


def find_bin_dir() -> str:
    """The folder holding ``initdb`` and ``pg_ctl`` (Debian keeps them off PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if found:
        return os.path.dirname(found[0])
    initdb = shutil.which("initdb")
    if initdb is not None:
        return os.path.dirname(os.path.realpath(initdb))
    raise UnavailableError("PostgreSQL is not installed (no initdb); `make postgres` installs it")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """One server in a temporary folder: ``start()``, ``create_database()``, ``stop()``."""

    def __init__(self) -> None:
        self.bin_dir = find_bin_dir()
        self.port = _free_port()
        self.folder = tempfile.mkdtemp(prefix="zenmeta-pg-")
        self.data = os.path.join(self.folder, "data")
        self.log = os.path.join(self.folder, "server.log")
        self._as_root = os.geteuid() == 0
        self._databases = 0

    # -- running commands as the server's user ------------------------------
    def _command(self, name: str, *args: str) -> list[str]:
        command = [os.path.join(self.bin_dir, name), *args]
        if self._as_root:
            return ["runuser", "-u", "postgres", "--", *command]
        return command

    def _run(self, name: str, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(
            self._command(name, *args),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.folder,
        )
        if done.returncode != 0:
            raise UnavailableError(
                f"{name} {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}"
                f"{self._log_tail()}"
            )
        return done.stdout

    def _log_tail(self) -> str:
        try:
            with open(self.log, encoding="utf-8", errors="replace") as log:
                return "\n" + "".join(log.readlines()[-20:])
        except OSError:
            return ""

    # -- the server's life ----------------------------------------------------
    def start(self) -> PostgresServer:
        if self._as_root:
            subprocess.run(["chown", "postgres:", self.folder], check=True)
        self._run(
            "initdb",
            "--no-sync",
            "--auth=trust",
            f"--username={SUPERUSER}",
            "--encoding=UTF8",
            "--locale=C",
            "-D",
            self.data,
        )
        with open(os.path.join(self.data, "postgresql.conf"), "a", encoding="utf-8") as conf:
            conf.write(
                f"\nport = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                "unix_socket_directories = ''\n"
                "fsync = off\n"
                "synchronous_commit = off\n"
                "full_page_writes = off\n"
                "max_connections = 200\n"
            )
        self.pg_ctl("start")
        return self

    def pg_ctl(self, action: str, *extra: str) -> None:
        """``start``, ``stop``, ``restart`` (fast shutdown, waiting for it) or ``reload``."""
        args = ["-D", self.data]
        if action in ("start", "restart"):
            args += ["-l", self.log]
        if action != "reload":
            args += ["-w", "-t", "60"]
        if action in ("stop", "restart"):
            args += ["-m", "fast"]
        self._run("pg_ctl", action, *args, *extra)

    def stop(self) -> None:
        """Stop the server (if it runs) and remove its folder."""
        try:
            if os.path.exists(os.path.join(self.data, "postmaster.pid")):
                self.pg_ctl("stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    # -- what the tests use -----------------------------------------------------
    def url(self, database: str = "postgres", *, user: str = SUPERUSER, password: str = "") -> str:
        """A SQLAlchemy URL for ``database``, through psycopg 3."""
        secret = f":{password}" if password else ""
        return f"postgresql+psycopg://{user}{secret}@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL as the superuser; its unaligned output."""
        return self._run(
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            SUPERUSER,
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-c",
            sql,
        )

    def create_database(self, prefix: str = "zenmeta") -> str:
        """A fresh, empty database; its URL."""
        self._databases += 1
        name = f"{prefix}_{self._databases}"
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, name)
        return self.url(name)

    def empty_database(self, url: str) -> None:
        """Drop every table of the database ``url`` names, for a fresh store."""
        database = url.rsplit("/", 1)[1]
        self.psql(
            "SET lock_timeout = '20s'; DROP SCHEMA public CASCADE; CREATE SCHEMA public;",
            database,
        )

    def create_role_with_password(self, role: str, password: str) -> str:
        """A login role that must give its password (scram-sha-256, not trust),
        owning a database of its own; that database's URL, password included."""
        self.psql(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        self.psql(f"CREATE DATABASE {role}_db OWNER {role}")
        hba = os.path.join(self.data, "pg_hba.conf")
        with open(hba, encoding="utf-8") as existing:
            rules = existing.read()
        with open(hba, "w", encoding="utf-8") as updated:
            updated.write(f"host all {role} 127.0.0.1/32 scram-sha-256\n{rules}")
        self.pg_ctl("reload")
        return self.url(f"{role}_db", user=role, password=password)
