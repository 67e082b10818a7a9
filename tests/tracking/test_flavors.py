"""Components named by configuration and found through entry points."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import zenmeta
from zenmeta import pipeline_run
from zenmeta._tracking import components as _components
from zenmeta._tracking import flavors as _flavors
from zenmeta.integrations.environment import EnvironmentComponent
from zenmeta.testing import recording


@pytest.fixture
def fake_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed-looking package declaring a ``stopwatch`` component flavor."""
    site = tmp_path / "site"
    package = site / "stopwatch_plugin"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        textwrap.dedent(
            """
            class Stopwatch:
                name = "stopwatch"

                def get_pipeline_run_metadata(self, run_id):
                    return {"started": True}
            """
        )
    )
    info = site / "stopwatch_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: stopwatch-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[zenmeta.components]\nstopwatch = stopwatch_plugin:Stopwatch\n"
    )
    monkeypatch.syspath_prepend(str(site))
    _flavors.reset_flavors()
    return site


def test_the_environment_variable_picks_the_components(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ZENMETA_COMPONENTS`` adds the named flavors to every run's stack."""
    monkeypatch.setenv("ZENMETA_COMPONENTS", "environment")
    with recording() as store, pipeline_run("configured"):
        pass
    assert "python_version" in store.list_runs()[0].metadata["environment"]


def test_pyproject_found_upward_picks_the_components(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``[tool.zenmeta] components`` in the nearest pyproject.toml above the cwd."""
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.zenmeta]\ncomponents = ["environment", "mlflow"]\n'
    )
    (tmp_path / "src" / "deep").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "src" / "deep")
    assert _components.default_stack().names == ("environment", "mlflow")


def test_the_environment_variable_wins_over_pyproject_even_when_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty ``ZENMETA_COMPONENTS`` turns configured components off."""
    (tmp_path / "pyproject.toml").write_text('[tool.zenmeta]\ncomponents = ["environment"]\n')
    monkeypatch.setenv("ZENMETA_COMPONENTS", "")
    assert _components.default_stack().names == ()


def test_a_pyproject_without_zenmeta_configures_nothing(tmp_path: Path) -> None:
    """A project's own pyproject.toml does not turn anything on by itself."""
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert _components.default_stack().names == ()


def test_an_unknown_flavor_is_a_clear_error_listing_the_known_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The error names the bad flavor and every installed one."""
    monkeypatch.setenv("ZENMETA_COMPONENTS", "environment, mlfow")
    with pytest.raises(zenmeta.ConfigurationError) as caught, pipeline_run("typo"):
        pass
    message = str(caught.value)
    assert "'mlfow'" in message and "environment, mlflow" in message


@pytest.mark.parametrize("value", ["3", "0", "false", "{}", '["ok", 1]'])
def test_a_bad_pyproject_value_is_a_clear_error(tmp_path: Path, value: str) -> None:
    """``components`` must be a list of names: falsy values included (only a
    missing key and an empty list mean none)."""
    (tmp_path / "pyproject.toml").write_text(f"[tool.zenmeta]\ncomponents = {value}\n")
    with pytest.raises(zenmeta.ConfigurationError, match="list of flavor names"):
        _components.default_stack()


def test_a_third_party_entry_point_is_found(
    fake_distribution: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flavor from another distribution is used like a built-in one."""
    monkeypatch.setenv("ZENMETA_COMPONENTS", "stopwatch")
    assert "stopwatch" in _flavors.available_flavors()
    with recording() as store, pipeline_run("plugin"):
        pass
    assert store.list_runs()[0].metadata["stopwatch"] == {"started": True}


def test_mlflow_is_found_through_its_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    """The built-in flavors are declared in the entry-point group too."""
    pytest.importorskip("mlflow")
    from zenmeta.integrations.mlflow import MLFlowExperimentTracker

    monkeypatch.setenv("ZENMETA_COMPONENTS", "mlflow")
    (component,) = _components.default_stack().components
    assert isinstance(component, MLFlowExperimentTracker)


def test_configured_components_are_created_once_and_changes_apply_at_the_next_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same instance serves every run; a changed variable is read at run start."""
    monkeypatch.setenv("ZENMETA_COMPONENTS", "environment")
    first = _components.default_stack()
    assert _components.default_stack() is first
    monkeypatch.setenv("ZENMETA_COMPONENTS", "environment,mlflow")
    second = _components.default_stack()
    assert second.names == ("environment", "mlflow")
    assert second.components[0] is first.components[0]
    monkeypatch.delenv("ZENMETA_COMPONENTS")
    assert _components.default_stack().names == ()


def test_a_registered_component_wins_over_a_configured_flavor_of_its_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Code is more specific than configuration: no duplicate-name error."""
    mine = EnvironmentComponent(packages=["pytest"])
    zenmeta.register_component(mine)
    monkeypatch.setenv("ZENMETA_COMPONENTS", "environment")
    assert _components.default_stack().components == (mine,)
