"""One rule each for durations, sizes, links and type labels, the same on every screen."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from click.testing import CliRunner

import zenmeta
from zenmeta import StorageSize, Uri
from zenmeta._records import RecordedStep
from zenmeta._ui import text
from zenmeta._ui.cli import cli
from zenmeta._ui.dashboard import render
from zenmeta._ui.notebook import step_html, value_html


@pytest.mark.parametrize(
    ("uri", "href"),
    [
        ("https://example.com/a?b=c#d", "https://example.com/a?b=c#d"),
        ("HTTP://EXAMPLE.COM", "HTTP://EXAMPLE.COM"),
        ("file:///tmp/mlruns", "file:///tmp/mlruns"),
        ("javascript:alert(1)", None),
        ("JAVASCRIPT:alert(1)", None),
        ("  javascript:alert(1)", None),
        ("\x01javascript:alert(1)", None),
        ("java\nscript:alert(1)", None),
        ("https://ok.example/\n", None),
        ("data:text/html,hi", None),
        ("mailto:someone@example.com", None),
        ("s3://bucket/key", None),
        ("//example.com", None),
        ("relative/path", None),
        ("", None),
    ],
)
def test_only_http_https_and_file_uris_become_links(uri: str, href: str | None) -> None:
    """Any other scheme, or any control character, keeps a Uri as text."""
    assert text.link_target(uri) == href


@pytest.mark.parametrize(
    ("size", "shown"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1_572_864, "1.5 MiB"),
        (5 * 1024**3, "5.0 GiB"),
        (2**60, "1.0 EiB"),
        (-2048, "-2.0 KiB"),
    ],
)
def test_storage_sizes_read_in_binary_units(size: int, shown: str) -> None:
    """Sizes use KiB, MiB…; the page adds the exact bytes as a tooltip."""
    assert text.human_size(size) == shown
    assert f'title="{size:,} bytes"' in render.render_value(StorageSize(size))
    assert text.human_size(size) in value_html(StorageSize(size))


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, "—"), (0.0000042, "4 µs"), (0.0123, "12 ms"), (4.2, "4.20 s"),
     (125, "2 min 05 s"), (7384, "2 h 03 min"), (-2.0, "-2.00 s")],
)  # fmt: skip
def test_durations_use_a_fitting_unit(seconds: float | None, shown: str) -> None:
    """From microseconds to hours, each in the unit a reader expects."""
    assert text.human_duration(seconds) == shown


def test_a_sub_millisecond_step_reads_the_same_in_terminal_notebook_and_dashboard(
    tmp_path: object,
) -> None:
    """A 0.4 ms step read "0 ms" in the CLI and notebook but "400 µs" in the dashboard."""
    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    step = RecordedStep(
        uuid.uuid4(), uuid.uuid4(), None, "s", "s", "completed", start,
        start + dt.timedelta(microseconds=400), None, None, {}, (), (),
    )  # fmt: skip
    assert text.human_duration(step.duration) == "400 \u00b5s"
    assert "400 \u00b5s" in step_html(step)
    zenmeta.configure(store="sqlite:///" + str(tmp_path) + "/runs.db")

    @zenmeta.track_step
    def quick() -> None:
        pass

    with zenmeta.pipeline_run("p") as run:
        quick()
    shown = CliRunner().invoke(cli, ["runs", "show", str(run.id)]).output
    assert " \u00b5s" in shown and " 0 ms" not in shown


@pytest.mark.parametrize("uri", ["https://a b", "https://a\u202eb", "https://a\u00a0b"])
def test_a_uri_with_spaces_or_bidi_controls_is_a_link_on_no_screen(uri: str) -> None:
    """The dashboard linked ``https://a b`` and the notebook did not; now neither does."""
    assert text.link_target(uri) is None
    assert "<a " not in value_html(Uri(uri))
    assert "<a " not in render.render_value(Uri(uri))
    assert "<a " in value_html(Uri("https://example.com/a"))
    assert "<a " in render.render_value(Uri("https://example.com/a"))
