"""``Client.scan_secrets`` and ``zenmeta store scan [--fix]`` on stores written unredacted."""

from __future__ import annotations

import json
from pathlib import Path as FilePath

import pytest
from click.testing import CliRunner

import zenmeta
from zenmeta import Client, log_metadata, pipeline_run, track_step
from zenmeta._store import close_stores
from zenmeta._ui.cli import cli
from zenmeta.testing import InMemoryStore

PASSWORD = "zz-planted-password"
TOKEN = "ghp_" + "Z9y8X7w6V5u4T3s2R1q0P9o8N7m6L5k4J3i2"


class Tracker(zenmeta.StackComponent):
    """A component that leaks its server URL into the run's metadata."""

    flavor = "tracker"

    def get_pipeline_run_metadata(self, run_id: object) -> dict[str, zenmeta.MetadataType]:
        return {"server": zenmeta.Uri(f"https://bot:{PASSWORD}@tracker.example.com/api")}


@track_step
def train() -> None:
    log_metadata({"epochs": 3, "auth": {"api_key": "zz-planted-key"}, "push": f"with {TOKEN}"})


def _leaky_store(path: FilePath, durability: str = "immediate") -> str:
    """A SQLite store written with redaction switched off: the secrets are in it.
    Batched, a step's one set is kept in its own row (schema version 6)."""
    url = f"sqlite:///{path}"
    zenmeta.configure(store=url, redact=False, durability=durability)
    with pipeline_run("leaky", run_name="leaky-run", components=[Tracker()]):
        train()
    with pipeline_run("clean", run_name="clean-run"):
        log_metadata({"accuracy": 0.9})
    zenmeta.flush()
    close_stores()
    zenmeta.configure(store=None, redact=None, durability=None)
    return url


def _raw(path: FilePath) -> bytes:
    return b"".join(f.read_bytes() for f in path.parent.iterdir() if f.name.startswith(path.name))


def test_scan_reports_run_step_source_key_and_rule(tmp_path: FilePath) -> None:
    """Each stored secret is found with where it is and which rule it breaks."""
    url = _leaky_store(tmp_path / "z.db")
    findings = Client(url).scan_secrets()
    seen = {(f.run_name, f.step_name, f.source, f.key, f.rule) for f in findings}
    assert seen == {
        ("leaky-run", None, "tracker", "server", "url credentials"),
        ("leaky-run", "train", "user", "auth.api_key", "secret key"),
        ("leaky-run", "train", "user", "push", "github token"),
    }
    assert PASSWORD.encode() in _raw(tmp_path / "z.db")  # a scan changes nothing


@pytest.mark.parametrize("durability", ["immediate", "batched"])
def test_fix_masks_in_place_notes_it_and_leaves_no_trace_in_the_file(
    tmp_path: FilePath, durability: str
) -> None:
    """After ``fix=True`` the values read back masked, with a note, and the
    secrets are gone from the database file's bytes; a second scan finds nothing."""
    path = tmp_path / "z.db"
    url = _leaky_store(path, durability)
    client = Client(url)
    assert len(client.scan_secrets(fix=True)) == 3
    run = client.get_run("leaky-run")
    step = client.list_steps(run)[0]
    assert run.metadata["tracker"]["server"] == "https://bot:***@tracker.example.com/api"
    assert isinstance(run.metadata["tracker"]["server"], zenmeta.Uri)
    assert step.metadata["user"] == {
        "epochs": 3,
        "auth": {"api_key": "***"},
        "push": "with ghp_***",
    }
    assert ("user", "push", "redacted: github token") in step.dropped
    assert ("tracker", "server", "redacted: url credentials") in run.dropped
    assert client.get_run("clean-run").metadata["user"] == {"accuracy": 0.9}
    assert client.scan_secrets() == []
    close_stores()
    raw = _raw(path)
    assert [s for s in (PASSWORD, TOKEN, "zz-planted-key") if s.encode() in raw] == []


class FailingUpload(zenmeta.StackComponent):
    """A component whose failure message names a URL with its password."""

    flavor = "upload"

    def get_step_run_metadata(self, info: object) -> dict[str, zenmeta.MetadataType]:
        raise ConnectionError(f"cannot reach https://bot:{PASSWORD}@artifacts.example.com")


def test_fix_masks_stored_error_and_fault_messages(tmp_path: FilePath) -> None:
    """A failed step's message and a component's fault message are found and fixed."""
    path = tmp_path / "z.db"
    zenmeta.configure(store=f"sqlite:///{path}", redact=False, durability="immediate")

    @track_step
    def connect() -> None:
        raise RuntimeError(f"login failed for postgresql://app:{PASSWORD}@db/prod")

    components = [FailingUpload()]
    with pytest.raises(RuntimeError), pipeline_run("p", run_name="broken", components=components):
        connect()
    close_stores()
    zenmeta.configure(store=None, redact=None, durability=None)
    client = Client(f"sqlite:///{path}")
    seen = {(f.step_name, f.source, f.key, f.rule) for f in client.scan_secrets(fix=True)}
    assert seen == {
        ("connect", "error", "error_message", "url credentials"),
        ("connect", "upload", "get_step_run_metadata error", "url credentials"),
        (None, "error", "error_message", "url credentials"),
    }
    run = client.get_run("broken")
    step = client.list_steps(run)[0]
    assert step.error_message == "login failed for postgresql://app:***@db/prod"
    assert step.faults[0].message == "cannot reach https://bot:***@artifacts.example.com"
    assert run.error_message == step.error_message
    assert client.scan_secrets() == []
    close_stores()
    assert PASSWORD.encode() not in _raw(path)


def test_fix_on_the_in_memory_store() -> None:
    """The in-memory store rewrites its records the same way."""
    memory = InMemoryStore()
    zenmeta.configure(store=memory, redact=False)
    with pipeline_run("leaky"):
        train()
    zenmeta.configure(redact=None)
    client = Client(memory)
    assert len(client.scan_secrets(fix=True)) == 2
    step = client.list_steps(client.list_runs()[0])[0]
    assert step.metadata["user"]["auth"] == {"api_key": "***"}
    assert client.scan_secrets() == []


def test_cli_scan_lists_findings_and_exits_1_then_fix_clears_them(tmp_path: FilePath) -> None:
    """``store scan`` fails on a leak (for CI); ``--fix`` masks it; then it passes."""
    url = _leaky_store(tmp_path / "z.db")
    runner = CliRunner()
    found = runner.invoke(cli, ["--store", url, "store", "scan"])
    assert found.exit_code == 1, found.output
    assert "leaky-run" in found.output and "url credentials" in found.output
    assert PASSWORD not in found.output
    as_json = runner.invoke(cli, ["--store", url, "store", "scan", "--json"])
    assert {item["key"] for item in json.loads(as_json.output)} == {
        "server",
        "auth.api_key",
        "push",
    }
    fixed = runner.invoke(cli, ["--store", url, "store", "scan", "--fix"])
    assert fixed.exit_code == 0, fixed.output
    assert "3 value(s) in 1 run(s) masked" in fixed.output
    again = runner.invoke(cli, ["--store", url, "store", "scan"])
    assert again.exit_code == 0 and "No stored value needs redacting" in again.output
    shown = runner.invoke(cli, ["--store", url, "runs", "show", "leaky-run"])
    assert "redacted user/push (github token)" in shown.output


def test_fix_on_a_store_that_cannot_rewrite_is_a_clear_error() -> None:
    """A reader without ``rewrite_metadata`` raises ``StoreError`` instead of pretending."""

    class ReadOnly:
        def __init__(self) -> None:
            self.memory = InMemoryStore()
            self.list_runs = self.memory.list_runs
            self.find_runs = self.memory.find_runs
            self.list_steps = self.memory.list_steps
            self.get_step = self.memory.get_step

    with pytest.raises(zenmeta.StoreError):
        Client(ReadOnly()).scan_secrets(fix=True)  # type: ignore[arg-type]


def test_the_client_shows_a_store_url_without_its_password() -> None:
    """``Client.url`` (what the CLI and dashboard print) masks the password."""
    store = InMemoryStore(f"postgresql://team:{PASSWORD}@db.example.com/zenmeta")
    client = Client(store)
    assert client.url == "postgresql://team:***@db.example.com/zenmeta"
    assert client.store_info()["url"] == client.url
