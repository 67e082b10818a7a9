"""The `zenmeta` command, through click's runner and as a real process."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path as FilePath

import pytest
from click.testing import CliRunner, Result

import zenmeta
from zenmeta import StorageSize, Uri, log_metadata, pipeline_run, track_step
from zenmeta._ui.cli import cli


class Probe:
    """A component whose metadata shows under its own name."""

    name = "probe"

    def get_pipeline_run_metadata(self, run_id: object) -> dict[str, object]:
        return {"host_cpus": 8}

    def get_step_run_metadata(self, info: object) -> dict[str, object]:
        return {"model": Uri("https://models.example/7")}


@track_step
def train(epochs: int) -> int:
    log_metadata({"epochs": epochs, "loss": math.nan, "weights": StorageSize(5 * 1024**2)})
    return epochs


@pytest.fixture
def url(store_url: str) -> str:
    """A store (SQLite, then PostgreSQL) holding one completed and one failed run."""
    store = store_url
    zenmeta.configure(store=store)
    with pipeline_run("training", run_name="good", components=[Probe()]):
        log_metadata({"dataset": "iris"})
        train(1)
        train(2)
    with pytest.raises(RuntimeError), pipeline_run("scoring", run_name="bad"):
        raise RuntimeError("out of memory")
    return store


def invoke(*arguments: str) -> Result:
    return CliRunner().invoke(cli, list(arguments), catch_exceptions=False)


def test_runs_list_shows_a_table_newest_first(url: str) -> None:
    """The table names each run with its pipeline, status and step count."""
    result = invoke("--store", url, "runs", "list")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    bad, good = (
        next(i for i, line in enumerate(lines) if name in line) for name in ("bad", "good")
    )
    assert bad < good
    assert "failed" in lines[bad] and "scoring" in lines[bad]
    assert "completed" in lines[good] and "training" in lines[good]


def test_runs_list_filters_and_prints_json(url: str) -> None:
    """--pipeline, --status and --limit filter; --json parses back."""
    result = invoke("--store", url, "runs", "list", "--status", "failed", "--json")
    assert [run["name"] for run in json.loads(result.output)] == ["bad"]
    result = invoke("--store", url, "runs", "list", "--pipeline", "training", "--json")
    (run,) = json.loads(result.output)
    assert run["step_count"] == 2 and run["metadata"]["probe"] == {"host_cpus": 8}
    assert (
        len(json.loads(invoke("--store", url, "runs", "list", "--limit", "1", "--json").output))
        == 1
    )
    assert (
        "No runs recorded matching"
        in invoke("--store", url, "runs", "list", "--pipeline", "x").output
    )


def test_runs_show_groups_metadata_by_component_and_lists_steps(url: str) -> None:
    """Run metadata per source, the steps with status, each step's metadata."""
    output = invoke("--store", url, "runs", "show", "good").output
    for expected in ("probe", "host_cpus", "user", "dataset", "iris", "train_2", "completed"):
        assert expected in output
    assert "https://models.example/7" in output and "5.0 MiB" in output and "NaN" in output
    assert output.index("Run metadata") < output.index("Steps") < output.index("Step train_2")


def test_runs_show_json_holds_the_run_and_its_steps(url: str) -> None:
    """--json is the run's to_dict() with its steps, NaN as a string."""
    shown = json.loads(invoke("--store", url, "runs", "show", "good", "--json").output)
    assert [step["name"] for step in shown["steps"]] == ["train", "train_2"]
    assert shown["steps"][0]["metadata"]["user"]["loss"] == "NaN"
    assert shown["steps"][0]["metadata_types"]["probe"]["model"] == "Uri"


def test_runs_export_prints_one_json_document(url: str) -> None:
    """export: the run and every step, by id prefix as well as by name."""
    exported = json.loads(invoke("--store", url, "runs", "export", "bad").output)
    assert exported["status"] == "failed" and exported["error_message"] == "out of memory"
    by_prefix = json.loads(invoke("--store", url, "runs", "export", exported["id"][:30]).output)
    assert by_prefix == exported


def test_unknown_run_is_one_clear_line_and_exit_code_1(url: str) -> None:
    """No traceback: a message naming what was not found."""
    result = CliRunner().invoke(cli, ["--store", url, "runs", "show", "nope"])
    assert result.exit_code == 1
    assert "no run has the id, id prefix or name 'nope'" in result.stderr
    assert "Traceback" not in result.output
    assert CliRunner().invoke(cli, ["--store", url, "runs", "export", "nope"]).exit_code == 1


def test_unreadable_store_is_a_clear_error(tmp_path: FilePath) -> None:
    """A store URL that cannot be opened: one line, exit code 1."""
    result = CliRunner().invoke(cli, ["--store", "nosuch://x", "runs", "list"])
    assert result.exit_code == 1 and "nosuch://" in result.stderr
    assert "sqlite:///PATH" in result.stderr and "memory://" in result.stderr  # what works


def test_store_info_says_where_and_what(url: str, tmp_path: FilePath) -> None:
    """Location, schema version and counts, as text and as JSON."""
    info = json.loads(invoke("--store", url, "store", "info", "--json").output)
    where = f"{tmp_path}/store/zenmeta.db" if url.startswith("sqlite") else None
    assert info["path"] == where and info["schema_version"] == 3
    assert info["backend"] == url.split(":")[0].split("+")[0]
    assert (info["runs"], info["steps"]) == (2, 2)
    text = invoke("--store", url, "store", "info").output
    assert "schema version" in text and (where or url) in text


def test_store_option_takes_a_plain_file_path(tmp_path: FilePath) -> None:
    """`--store runs.db` means the SQLite file at that path."""
    zenmeta.configure(store=f"sqlite:///{tmp_path}/cli.db")
    with pipeline_run("p", run_name="good"):
        train(1)
    runs = json.loads(invoke("--store", str(tmp_path / "cli.db"), "runs", "list", "--json").output)
    assert {run["name"] for run in runs} == {"good"}


def test_default_store_is_the_configured_one(url: str) -> None:
    """Without --store, the command reads what Client() reads."""
    assert {r["name"] for r in json.loads(invoke("runs", "list", "--json").output)} == {
        "good",
        "bad",
    }


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["runs"],
        ["runs", "list"],
        ["runs", "show"],
        ["runs", "export"],
        ["store"],
        ["store", "info"],
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    """--help works everywhere and says what the command does."""
    result = invoke(*command, "--help")
    assert result.exit_code == 0 and "Usage:" in result.output
    summary = result.output.split("\n\n")[1].strip()
    assert len(summary) > 10


def test_logged_text_is_printed_literally(tmp_path: FilePath) -> None:
    """Rich markup in a logged value is shown as typed, and odd text never crashes."""
    store = f"sqlite:///{tmp_path}/odd.db"
    zenmeta.configure(store=store)
    with pipeline_run("p", run_name="[bold]odd[/bold]"):
        log_metadata({"note": "[red]not red[/red]", "bytes": "bad \udcff"})
    result = invoke("--store", store, "runs", "show", "[bold]odd[/bold]")
    assert "[red]not red[/red]" in result.output and "[bold]odd[/bold]" in result.output
    assert "\\udcff" in result.output
    exported = json.loads(invoke("--store", store, "runs", "export", "[bold]odd[/bold]").output)
    assert exported["metadata"]["user"]["bytes"] == "bad \udcff"


def test_python_dash_m_zenmeta_runs_in_a_real_process(url: str, tmp_path: FilePath) -> None:
    """`python -m zenmeta` as a subprocess: JSON out, exit codes, ZENMETA_STORE read."""
    env = {**os.environ, "ZENMETA_STORE": url}
    listed = subprocess.run(
        [sys.executable, "-m", "zenmeta", "runs", "list", "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=True,
    )
    assert {run["name"] for run in json.loads(listed.stdout)} == {"good", "bad"}
    missing = subprocess.run(
        [sys.executable, "-m", "zenmeta", "runs", "show", "nope"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "nope" in missing.stderr


def test_ui_reads_the_store_given_to_the_group_or_its_own(
    monkeypatch: pytest.MonkeyPatch, tmp_path: FilePath
) -> None:
    """`zenmeta --store X ui` and `zenmeta ui --store X` both serve X, as typed (Client
    applies the naming rule)."""
    import zenmeta._ui.dashboard

    served: list[str | None] = []
    monkeypatch.setattr(
        zenmeta._ui.dashboard,
        "serve",
        lambda host, port, store, allow_hosts: served.append(store),
    )
    runner = CliRunner()
    database = tmp_path / "team.db"
    assert runner.invoke(cli, ["--store", str(database), "ui"]).exit_code == 0
    assert runner.invoke(cli, ["ui", "--store", "sqlite:///other.db"]).exit_code == 0
    assert served == [str(database), "sqlite:///other.db"]


HOSTILE_TEXT = (
    "clear\x1b[2J\x1b]8;;https://evil.example\x07link\x1b]8;;\x07 bell\x07"
    " c1\x9b31m rtl invoice\u202egpj.exe"
)
UNSAFE = ("\x1b", "\x07", "\x9b", "\u202e")


@pytest.fixture
def hostile(tmp_path: FilePath) -> str:
    """A store whose names, keys, values, tags and errors hold terminal escapes."""
    store = f"sqlite:///{tmp_path}/hostile.db"
    zenmeta.configure(store=store)

    @track_step(name="step" + HOSTILE_TEXT)
    def step() -> None:
        log_metadata({"key" + HOSTILE_TEXT: "value" + HOSTILE_TEXT})
        raise ValueError("error" + HOSTILE_TEXT)

    tags = ["tag" + HOSTILE_TEXT]
    with pytest.raises(ValueError), pipeline_run("pipe" + HOSTILE_TEXT, run_name="evil", tags=tags):
        log_metadata({"run" + HOSTILE_TEXT: 1})
        step()
    zenmeta.flush()
    return store


@pytest.mark.parametrize("command", [("runs", "list"), ("runs", "show", "evil"), ("store", "info")])
def test_terminal_output_escapes_control_characters(hostile: str, command: tuple[str, ...]) -> None:
    """ESC, BEL, C1 and bidi controls from the store reach the terminal as visible escapes."""
    result = invoke("--store", hostile, *command)
    assert result.exit_code == 0
    assert not any(char in result.output for char in UNSAFE), repr(result.output)
    if command[1:2] == ("show",):
        for shown in ("\\x1b[2J", "\\u202e", "\\x07", "\\x9b"):
            assert shown in result.output


def test_errors_escape_control_characters_too(hostile: str) -> None:
    """An error listing stored names (an ambiguous reference) cannot drive the terminal."""
    for _ in range(2):
        with pipeline_run("twins", run_name="twin\x1b[2J\u202e"):
            pass
    zenmeta.flush()
    result = CliRunner().invoke(cli, ["--store", hostile, "runs", "show", "twin\x1b[2J\u202e"])
    assert result.exit_code == 1 and "matches 2 runs" in result.stderr
    assert not any(char in result.stderr for char in UNSAFE)
    assert "twin\\x1b[2J\\u202e (" in result.stderr


@pytest.mark.parametrize("command", [("runs", "list", "--json"), ("runs", "show", "evil", "--json"),
                                     ("runs", "export", "evil")])  # fmt: skip
def test_json_output_is_exact_and_terminal_safe(hostile: str, command: tuple[str, ...]) -> None:
    """`--json` holds no raw control character and parses back to the stored text."""
    output = invoke("--store", hostile, *command).output
    assert not any(char in output for char in UNSAFE)
    data = json.loads(output)
    run = data[0] if isinstance(data, list) else data
    assert run["pipeline_name"] == "pipe" + HOSTILE_TEXT
    assert run["tags"] == ["tag" + HOSTILE_TEXT]
