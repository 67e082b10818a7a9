"""Redaction: secrets are masked before anything is queued, and each mask is noted."""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Any

import pytest

import zenmeta
from zenmeta import log_metadata, pipeline_run, track_step
from zenmeta._redaction import DEFAULT_RULES, MARKER, parse_rules, redact_value
from zenmeta.testing import InMemoryStore, recording

AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
GITHUB_TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
SLACK_TOKEN = "xoxb-" + "123456789012-abcdefABCDEF"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7bq\n-----END RSA PRIVATE KEY-----"
PASSWORD = "hunter2-zz-planted"


class LeakyComponent(zenmeta.StackComponent):
    """A component that records a connection URL and a token, as peers' components do."""

    flavor = "leaky"

    def get_pipeline_run_metadata(self, run_id: Any) -> dict[str, Any]:
        return {"tracking_uri": zenmeta.Uri(f"postgresql://alice:{PASSWORD}@db:5432/runs")}

    def get_step_run_metadata(self, info: Any) -> dict[str, Any]:
        return {"auth": {"api_key": "sk-live-zz-planted"}, "note": f"pushed with {GITHUB_TOKEN}"}


def _reasons(entity: Any) -> dict[tuple[str, str], str]:
    return {(drop.source, drop.key): drop.reason for drop in entity.dropped}


def test_a_url_password_is_masked_and_the_user_kept(store: InMemoryStore) -> None:
    """``postgresql://alice:secret@db`` is stored as ``postgresql://alice:***@db``."""

    @track_step
    def connect() -> None:
        log_metadata({"db": f"postgresql://alice:{PASSWORD}@db/prod"})

    with pipeline_run("p"):
        connect()
    step = store.list_steps(store.list_runs()[0].id)[0]
    assert step.metadata["user"]["db"] == "postgresql://alice:***@db/prod"
    assert _reasons(step)[("user", "db")] == "redacted: url credentials"


def test_values_under_secret_keys_are_replaced_in_nested_dicts_and_lists(
    store: InMemoryStore,
) -> None:
    """``password``, ``api_key``, ``GITHUB_TOKEN``… are hidden at any depth."""
    logged = {
        "config": {"db": {"Password": "p4ss", "host": "db"}, "hooks": [{"apiKey": "k-1"}]},
        "GITHUB_TOKEN": 12345,
        "learning_rate": 0.1,
    }
    with pipeline_run("p"):
        log_metadata(logged)
    run = store.list_runs()[0]
    user = run.metadata["user"]
    assert user["config"] == {
        "db": {"Password": MARKER, "host": "db"},
        "hooks": [{"apiKey": MARKER}],
    }
    assert user["GITHUB_TOKEN"] == MARKER
    assert user["learning_rate"] == 0.1
    reasons = _reasons(run)
    assert reasons[("user", "config.db.Password")] == "redacted: secret key"
    assert reasons[("user", "config.hooks[0].apiKey")] == "redacted: secret key"
    assert reasons[("user", "GITHUB_TOKEN")] == "redacted: secret key"


@pytest.mark.parametrize(
    ("planted", "secret_part", "rule"),
    [
        (AWS_KEY, AWS_KEY[4:], "aws access key id"),
        (GITHUB_TOKEN, GITHUB_TOKEN[4:], "github token"),
        ("github_pat_11ABCDEFG0123456789_abcdefghijklmnop", "11ABCDEFG0123456789", "github token"),
        (SLACK_TOKEN, SLACK_TOKEN[5:], "slack token"),
        (JWT, JWT[10:], "jwt"),
        (PEM, "MIIEowIBAAKCAQEA7bq", "private key"),
        ("https://example.com/hook?token=zzsecret&page=2", "zzsecret", "secret parameter"),
        ("https://blob.example.com/f?sig=zzsig123", "zzsig123", "secret parameter"),
        ("train.py --api-key=zzkey123", "zzkey123", "secret parameter"),
        ("PGPASSWORD=zzpg123 psql", "zzpg123", "secret parameter"),
    ],
)
def test_well_known_secret_formats_are_masked_inside_text(
    store: InMemoryStore, planted: str, secret_part: str, rule: str
) -> None:
    """A secret format is masked wherever it appears in a string, also in lists."""
    with pipeline_run("p"):
        log_metadata({"message": f"deployed with {planted} today", "items": ["x", planted]})
    run = store.list_runs()[0]
    text = repr(run.metadata)
    assert secret_part not in text
    assert _reasons(run)[("user", "message")] == f"redacted: {rule}"
    assert _reasons(run)[("user", "items[1]")] == f"redacted: {rule}"


def test_a_token_used_as_a_key_is_masked_in_the_key_and_in_the_note(
    store: InMemoryStore,
) -> None:
    """A secret in a key's own text is masked there too, at the top and nested."""
    with pipeline_run("p"):
        log_metadata({GITHUB_TOKEN: 1, "by_key": {AWS_KEY: "x"}})
        log_metadata({GITHUB_TOKEN: 2})  # again: the fast path must not let it through
    run = store.list_runs()[0]
    assert run.metadata["user"] == {"ghp_***": 2, "by_key": {"AKIA***": "x"}}
    assert GITHUB_TOKEN not in repr(run.dropped) and AWS_KEY not in repr(run.dropped)
    assert _reasons(run)[("user", "by_key.AKIA***")] == "redacted: aws access key id"


def test_a_component_fault_message_is_masked(zenmeta_log: pytest.LogCaptureFixture) -> None:
    """A hook that raises with a credential in its message is recorded, and logged, without it."""

    class Failing(zenmeta.StackComponent):
        def get_step_run_metadata(self, info: Any) -> dict[str, Any]:
            raise RuntimeError(f"upload to https://u:{PASSWORD}@host/x failed")

    @track_step
    def work() -> None:
        pass

    with recording(strict=False) as store, pipeline_run("p", components=[Failing()]):
        work()
    step = store.list_steps(store.list_runs()[0].id)[0]
    assert step.faults[0].message == "upload to https://u:***@host/x failed"
    assert "https://u:***@host/x" in zenmeta_log.text and PASSWORD not in zenmeta_log.text


def test_ordinary_values_pass_unchanged_with_no_note(store: InMemoryStore) -> None:
    """Numbers, words, paths, ``max_tokens`` and ``tokenizer`` are not secrets."""
    ordinary = {
        "loss": 0.25,
        "rows": 10,
        "split": "train",
        "max_tokens": 512,
        "tokenizer": "bert-base-uncased",
        "data": "s3://bucket/data/train.csv",
        "email": "team@example.com",
        "formula": "a=b+c",
        "layout": "design=wide author=bob",
        "requirement": "SecretStorage==3.3.3",
    }
    with pipeline_run("p"):
        log_metadata(ordinary)
    run = store.list_runs()[0]
    assert run.metadata["user"] == ordinary
    assert run.dropped == ()


def test_component_run_and_step_metadata_is_redacted_and_noted() -> None:
    """What a component returns is masked like user metadata, under its own source."""

    @track_step
    def work() -> None:
        pass

    with recording() as store, pipeline_run("p", components=[LeakyComponent()]):
        work()
    run = store.list_runs()[0]
    step = store.list_steps(run.id)[0]
    assert run.metadata["leaky"]["tracking_uri"] == "postgresql://alice:***@db:5432/runs"
    assert isinstance(run.metadata["leaky"]["tracking_uri"], zenmeta.Uri)
    assert step.metadata["leaky"] == {
        "auth": {"api_key": MARKER},
        "note": "pushed with ghp_***",
    }
    assert _reasons(run) == {("leaky", "tracking_uri"): "redacted: url credentials"}
    assert _reasons(step) == {
        ("leaky", "auth.api_key"): "redacted: secret key",
        ("leaky", "note"): "redacted: github token",
    }


def test_strict_mode_does_not_turn_a_redaction_into_an_error() -> None:
    """A masked secret is recorded and the step goes on, even under ``recording()``'s strictness."""
    with recording(strict=True) as store, pipeline_run("p"):
        log_metadata({"password": "x"})
    assert store.list_runs()[0].metadata["user"]["password"] == MARKER


def test_a_failing_step_message_is_masked(store: InMemoryStore) -> None:
    """An exception naming a URL with its password is stored without the password."""

    @track_step
    def connect() -> None:
        raise ConnectionError(f"cannot reach mysql://root:{PASSWORD}@db/app")

    with pytest.raises(ConnectionError), pipeline_run("p"):
        connect()
    run = store.list_runs()[0]
    step = store.list_steps(run.id)[0]
    assert step.error_message == "cannot reach mysql://root:***@db/app"
    assert PASSWORD not in (run.error_message or "")


def test_switched_off_by_configure_values_are_stored_as_given(store: InMemoryStore) -> None:
    """``configure(redact=False)`` keeps every value as logged, with no notes."""
    zenmeta.configure(redact=False)
    with pipeline_run("p"):
        log_metadata({"password": PASSWORD})
    run = store.list_runs()[0]
    assert run.metadata["user"]["password"] == PASSWORD
    assert run.dropped == ()


def test_switched_off_by_the_environment_variable(
    store: InMemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ZENMETA_REDACT=off`` is read as each run starts."""
    monkeypatch.setenv("ZENMETA_REDACT", "off")
    with pipeline_run("p"):
        log_metadata({"token": PASSWORD})
    monkeypatch.setenv("ZENMETA_REDACT", "on")
    with pipeline_run("q"):
        log_metadata({"token": PASSWORD})
    by_name = {run.pipeline_name: run.metadata["user"]["token"] for run in store.list_runs()}
    assert by_name == {"p": PASSWORD, "q": MARKER}


def test_allowed_keys_and_extra_patterns_from_the_environment(
    store: InMemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``allow=`` lets a key through, ``pattern=`` and ``key=`` mask more."""
    monkeypatch.setenv("ZENMETA_REDACT", "allow=token_count; pattern=EMP-[0-9]{6}; key=pin")
    with pipeline_run("p"):
        log_metadata({"token_count": 7, "employee": "id EMP-123456", "door_pin": 1234})
    run = store.list_runs()[0]
    assert run.metadata["user"] == {"token_count": 7, "employee": "id ***", "door_pin": MARKER}
    assert _reasons(run)[("user", "employee")] == "redacted: pattern 1"


def test_configure_takes_a_mapping_of_rules(store: InMemoryStore) -> None:
    """``configure(redact={"allow_keys": [...], "patterns": [...]})`` changes the rules."""
    zenmeta.configure(redact={"allow_keys": ["password_policy"], "patterns": [r"corp-\d+"]})
    with pipeline_run("p"):
        log_metadata({"password_policy": "12 chars", "ticket": "see corp-991"})
    assert store.list_runs()[0].metadata["user"] == {
        "password_policy": "12 chars",
        "ticket": "see ***",
    }


@pytest.mark.parametrize(
    "bad", ["pattern=(unclosed", "colour=blue", {"pattern": ["x"]}, {"patterns": "x"}, 3]
)
def test_a_bad_redaction_setting_is_a_clear_error(bad: Any) -> None:
    """A pattern that does not compile or an unknown entry raises ``ConfigurationError``."""
    with pytest.raises(zenmeta.ConfigurationError):
        zenmeta.configure(redact=bad)


def test_redact_value_masks_a_flag_value_by_its_name() -> None:
    """The public helper hides a value by the key it belongs to, and masks text."""
    assert zenmeta.redact("hunter2", key="--db-password") == MARKER
    assert zenmeta.redact(["--url", "https://u:p@h/x"]) == ["--url", "https://u:***@h/x"]
    assert redact_value("plain", key="epochs") == "plain"
    assert parse_rules("off").enabled is False
    assert DEFAULT_RULES.is_secret_key("client_secret")


def _plant_secrets() -> None:
    """Secrets in component output, log_metadata, nested dicts, URLs and an error."""

    @track_step
    def leak(fail: bool) -> None:
        log_metadata(
            {
                "dsn": f"postgresql://alice:{PASSWORD}@db/prod",
                "settings": {"aws": {"secret_access_key": "zz-aws-secret"}, "ids": [AWS_KEY]},
                "slack": SLACK_TOKEN,
                "jwt": JWT,
                "pem": PEM,
            }
        )
        if fail:
            raise RuntimeError(f"push to https://{GITHUB_TOKEN}@github.com/me/repo failed")

    with pytest.raises(RuntimeError), pipeline_run("p", components=[LeakyComponent()]):
        leak(False)
        log_metadata({"run_password": "zz-run-password"})
        leak(True)
    zenmeta.flush()
    from zenmeta._store import close_stores

    close_stores()


_PLANTED = [PASSWORD, "zz-aws-secret", AWS_KEY, SLACK_TOKEN, JWT, "MIIEowIBAAKCAQEA7bq"]
_PLANTED += [GITHUB_TOKEN, "sk-live-zz-planted", "zz-run-password"]


def test_no_secret_reaches_the_sqlite_file(tmp_path: FilePath) -> None:
    """Planted in component output, log_metadata, nested dicts, URLs and an error
    message, no secret is in the database file's bytes."""
    path = tmp_path / "store.db"
    zenmeta.configure(store=f"sqlite:///{path}", durability="immediate")
    _plant_secrets()
    raw = b"".join(
        candidate.read_bytes() for candidate in tmp_path.iterdir() if candidate.is_file()
    )
    assert [secret for secret in _PLANTED if secret.encode() in raw] == []
    assert b"redacted: url credentials" in raw


def test_no_secret_reaches_the_postgresql_tables(
    postgres_server: Any, request: pytest.FixtureRequest, tmp_path: FilePath
) -> None:
    """The same secrets, written to a real PostgreSQL server: every zenmeta table,
    read back as text with psql, holds none of them."""
    from conftest import fresh_store_url

    url = fresh_store_url(request, "postgresql", tmp_path)
    zenmeta.configure(store=url, durability="immediate")
    _plant_secrets()
    database = url.rsplit("/", 1)[1]
    dumped = "".join(
        postgres_server.psql(f"SELECT t::text FROM {table} t", database)
        for table in ("zenmeta_runs", "zenmeta_steps", "zenmeta_metadata")
    )
    assert [secret for secret in _PLANTED if secret in dumped] == []
    assert "redacted: url credentials" in dumped


def test_notebook_html_shows_a_redaction_as_such(store: InMemoryStore) -> None:
    """In Jupyter a redaction reads 'redacted source/key (rule)', not 'dropped'."""
    with pipeline_run("p"):
        log_metadata({"db": f"postgresql://alice:{PASSWORD}@db/prod"})
    html = store.list_runs()[0]._repr_html_()
    assert "redacted user/db (url credentials)" in html
    assert "dropped" not in html and PASSWORD not in html


def test_a_bad_environment_setting_fails_the_run_start_clearly(
    store: InMemoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ZENMETA_REDACT`` is checked as a run starts, like the other variables."""
    monkeypatch.setenv("ZENMETA_REDACT", "colour=blue")
    with pytest.raises(zenmeta.ConfigurationError, match="ZENMETA_REDACT"), pipeline_run("p"):
        pass


def test_a_store_fault_warning_does_not_print_the_store_password(
    zenmeta_log: pytest.LogCaptureFixture,
) -> None:
    """A store that fails is named in the warning by its URL, password masked."""

    class Unreachable(InMemoryStore):
        def save_run(self, record: Any) -> None:
            raise ConnectionError(f"connection to {self.url} refused")

    zenmeta.configure(store=Unreachable(f"postgresql://team:{PASSWORD}@db.example.com/zenmeta"))
    with pipeline_run("p"):
        pass
    assert "postgresql://team:***@db.example.com/zenmeta" in zenmeta_log.text
    assert PASSWORD not in zenmeta_log.text


def test_a_secret_under_a_key_judged_clean_at_earlier_steps_is_masked(
    store: InMemoryStore,
) -> None:
    """After its first steps, a step loop's mapping takes the codec's plain
    path (keys judged clean, short words, numbers); a long text is screened
    on every step all the same, and a key never judged takes the full path."""

    @track_step
    def step(note: str, extra: dict[str, Any]) -> None:
        log_metadata({"loss": 0.5, "note": note, **extra})

    with pipeline_run("p"):
        step("ok", {})
        step("fine", {})
        step(f"postgresql://alice:{PASSWORD}@db/runs", {})
        step("ok", {"password": "short"})
    *_, leaked_note, secret_key = store.list_steps(store.list_runs()[0].id)
    assert leaked_note.metadata["user"]["note"] == "postgresql://alice:***@db/runs"
    assert secret_key.metadata["user"]["password"] == MARKER
    assert PASSWORD not in repr(store.list_steps(store.list_runs()[0].id))


def test_with_extra_patterns_a_step_loops_short_text_is_screened_at_every_step(
    store: InMemoryStore,
) -> None:
    """A pattern may match any text, however short: with one configured, no
    step takes the plain path (``Rules.plain``), not even a loop's tenth."""
    zenmeta.configure(redact={"patterns": [r"X\d"]})

    @track_step
    def step(code: str) -> None:
        log_metadata({"loss": 0.5, "code": code})

    with pipeline_run("p"):
        for _ in range(10):
            step("ab")
        step("X1")
    assert store.list_steps(store.list_runs()[0].id)[-1].metadata["user"]["code"] == "***"


def test_only_default_rules_let_values_under_clean_keys_pass_unscreened() -> None:
    assert DEFAULT_RULES.plain
    assert not parse_rules("pattern=X[0-9]").plain
    assert not parse_rules("off").plain
