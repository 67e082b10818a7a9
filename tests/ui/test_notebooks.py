"""The notebooks, each executed top to bottom in a real Jupyter kernel.

Each notebook runs once per test session in a kernel of this interpreter,
with its working folder and its store (``ZENMETA_STORE``) in a temporary
folder; the tests then read that store from this process with
``zenmeta.Client`` and check what the notebook recorded, types included.

Committed notebooks carry no outputs. To strip them after editing:
``.venv/bin/python tests/test_notebooks.py --strip``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import zenmeta
from zenmeta import Client, RecordedRun, StorageSize, Uri

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
SPEC_MARK = "ZENMETA_TEST_KERNELSPEC"  # set by our kernelspec only
PROBE = f"import os, sys\nprint(sys.executable, os.environ.get({SPEC_MARK!r}))"

pytestmark = pytest.mark.slow


@dataclass
class ExecutedNotebook:
    """A notebook run in a kernel, and the store it wrote to."""

    cells: list[dict[str, object]]
    store_url: str
    folder: Path
    kernel_probe: str

    def runs(self) -> dict[str, RecordedRun]:
        """The recorded runs by pipeline name (each notebook names its own)."""
        found = Client(self.store_url).list_runs()
        by_pipeline = {run.pipeline_name: run for run in found}
        assert len(by_pipeline) == len(found), [r.pipeline_name for r in found]
        return by_pipeline


@pytest.fixture(scope="session")
def jupyter_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``python3`` kernelspec that runs this very interpreter (the venv's)."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {
        "argv": argv,
        "display_name": "zenmeta tests",
        "language": "python",
        "env": {SPEC_MARK: str(root)},
    }
    (spec / "kernel.json").write_text(json.dumps(kernel))
    return root


def _execute(name: str, folder: Path, jupyter_path: Path) -> ExecutedNotebook:
    """Run ``notebooks/<name>`` in a fresh kernel whose cwd and TMPDIR are ``folder``."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(PROBE))
    url = f"sqlite:///{folder / 'zenmeta.db'}"
    with pytest.MonkeyPatch.context() as patch:
        for variable in [name for name in os.environ if name.startswith("ZENMETA_")]:
            patch.delenv(variable, raising=False)
        patch.setenv("ZENMETA_STORE", url)
        patch.setenv("JUPYTER_PATH", str(jupyter_path))  # searched before every other folder
        patch.setenv("IPYTHONDIR", str(folder / ".ipython"))  # no user startup files
        patch.setenv("TMPDIR", str(folder))  # notebooks' temp folders end up here
        client = nbclient.NotebookClient(
            notebook,
            kernel_name="python3",
            timeout=180,
            resources={"metadata": {"path": str(folder)}},
        )
        client.execute()
    probe = notebook.cells[-1].outputs
    kernel_probe = "".join(o.get("text", "") for o in probe).strip()
    return ExecutedNotebook(notebook.cells[:-1], url, folder, kernel_probe)


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory, jupyter_path: Path) -> ExecutedNotebook:
    return _execute("quickstart.ipynb", tmp_path_factory.mktemp("quickstart"), jupyter_path)


@pytest.fixture(scope="module")
def custom_component(
    tmp_path_factory: pytest.TempPathFactory, jupyter_path: Path
) -> ExecutedNotebook:
    return _execute("custom_component.ipynb", tmp_path_factory.mktemp("custom"), jupyter_path)


@pytest.fixture(scope="module")
def mlflow_notebook(
    tmp_path_factory: pytest.TempPathFactory, jupyter_path: Path
) -> ExecutedNotebook:
    pytest.importorskip("mlflow")
    return _execute("mlflow.ipynb", tmp_path_factory.mktemp("mlflow"), jupyter_path)


def _outputs(cell: dict[str, object], mime: str) -> str:
    outputs = cell.get("outputs") or []
    assert isinstance(outputs, list)
    return "".join(str(o.get("data", {}).get(mime, "")) for o in outputs)


def _cell_showing(notebook: ExecutedNotebook, source_end: str) -> dict[str, object]:
    """The code cell whose source ends with ``source_end`` (what it displays)."""
    for cell in notebook.cells:
        if cell["cell_type"] == "code" and str(cell["source"]).rstrip().endswith(source_end):
            return cell
    raise AssertionError(f"no cell ends with {source_end!r}")


# -- how the notebooks are run ---------------------------------------------


def test_notebooks_run_in_a_kernel_of_the_test_interpreter(
    quickstart: ExecutedNotebook, jupyter_path: Path
) -> None:
    """The kernel comes from the test's kernelspec and runs this interpreter."""
    assert quickstart.kernel_probe == f"{sys.executable} {jupyter_path}"


# -- quickstart --------------------------------------------------------------


def test_quickstart_records_a_pipeline_run_with_typed_step_metadata(
    quickstart: ExecutedNotebook,
) -> None:
    """The `with pipeline_run` cell records both steps and their values, types restored."""
    run = quickstart.runs()["training"]
    assert run.status == "completed" and run.tags == ("quickstart",)
    steps = Client(quickstart.store_url).list_steps(run)
    assert [s.name for s in steps] == ["load", "train"]
    load, train = (s.metadata["user"] for s in steps)
    assert load == {"rows": 100, "size": 800}
    assert type(load["size"]) is StorageSize
    assert type(train["columns"]) is tuple and train["columns"] == ("value",)


def test_quickstart_step_outside_a_run_opens_an_implicit_run(quickstart: ExecutedNotebook) -> None:
    """A step called with no run around it gets a one-step run named after it."""
    run = quickstart.runs()["load"]
    assert run.tags == ("implicit",) and run.status == "completed" and run.step_count == 1


def test_quickstart_run_spanning_cells_collects_steps_of_later_cells(
    quickstart: ExecutedNotebook,
) -> None:
    """Steps called in cells after start_run(), an awaited one included, join that run."""
    run = quickstart.runs()["exploration"]
    assert run.status == "completed" and run.end_time is not None
    steps = Client(quickstart.store_url).list_steps(run)
    assert [s.name for s in steps] == ["load", "evaluate", "train"]
    assert {s.run_id for s in steps} == {run.id}
    assert steps[1].metadata["user"] == {"spread": 6.0}
    assert run.metadata["user"] == {"notes": "values repeat every 7 rows"}


def test_quickstart_records_nothing_beyond_its_three_runs(quickstart: ExecutedNotebook) -> None:
    """No stray run, fault or dropped value: exactly what the notebook asked for."""
    runs = quickstart.runs()
    assert set(runs) == {"training", "load", "exploration"}
    assert all(not r.faults and not r.dropped for r in runs.values())


def test_quickstart_displays_runs_and_steps_as_html(quickstart: ExecutedNotebook) -> None:
    """The Client cells render a table of runs, the run, and each step with typed values."""
    runs_html = _outputs(_cell_showing(quickstart, "runs"), "text/html")
    assert runs_html.startswith("<table") and all(
        name in runs_html for name in ("training", "load", "exploration")
    )
    run_html = _outputs(_cell_showing(quickstart, "client.get_run(exploration.id)"), "text/html")
    assert "Run exploration-" in run_html and "values repeat every 7 rows" in run_html
    steps_html = _outputs(_cell_showing(quickstart, "display(step)"), "text/html")
    assert [part.split("<", 1)[0] for part in steps_html.split("<h4>Step ")[1:]] == [
        "load",
        "evaluate",
        "train",
    ]
    assert "StorageSize" in steps_html


# -- custom_component ---------------------------------------------------------


def test_custom_component_run_metadata_keeps_the_uri_type(
    custom_component: ExecutedNotebook,
) -> None:
    """get_pipeline_run_metadata's Uri comes back a Uri; the object's str() as text."""
    run = custom_component.runs()["lab-demo"]
    lab = run.metadata["lab"]
    assert lab == {"lab_url": f"https://lab.example.com/runs/{run.id}", "hardware": "2x A100"}
    assert type(lab["lab_url"]) is Uri and type(lab["hardware"]) is str


def test_custom_component_step_metadata_holds_ids_and_a_plain_float(
    custom_component: ExecutedNotebook,
) -> None:
    """Every step records its own ids and the numpy mean, cast by .item(), as a float."""
    run = custom_component.runs()["lab-demo"]
    steps = Client(custom_component.store_url).list_steps(run)
    assert [s.name for s in steps] == ["preprocess", "train", "preprocess_2", "train_2"]
    for step in steps:
        lab = step.metadata["lab"]
        assert lab["lab_step_id"] == str(step.id) and lab["lab_run_id"] == str(run.id)
        assert lab["invocation"] == step.name
        assert type(lab["mean_power_w"]) is float
        assert lab["mean_power_w"] == pytest.approx((212.5 + 230.0 + 221.5) / 3)
        assert not step.faults and not step.dropped


def test_custom_component_registered_by_default_serves_runs_without_components(
    custom_component: ExecutedNotebook,
) -> None:
    """register_component puts the component on the default stack of later runs."""
    run = custom_component.runs()["lab-default"]
    assert run.metadata["lab"]["lab_url"] == f"https://lab.example.com/runs/{run.id}"
    step = Client(custom_component.store_url).list_steps(run)[-1]
    assert step.metadata["lab"]["invocation"] == "train"


# -- mlflow -----------------------------------------------------------------------


@pytest.mark.filterwarnings(
    # MLflow 3.17's SQL store on SQLAlchemy 2.1, when this process opens it
    "ignore:The ``noload`` loader strategy is deprecated:sqlalchemy.exc.SADeprecationWarning"
)
def test_mlflow_notebook_links_zenmeta_records_to_mlflow_runs(
    mlflow_notebook: ExecutedNotebook,
) -> None:
    """The recorded ids open the parent and nested MLflow runs the steps logged into."""
    from mlflow import MlflowClient

    run = mlflow_notebook.runs()["mlflow-demo"]
    assert run.status == "completed"
    links = run.metadata["mlflow"]
    assert type(links["mlflow_tracking_uri"]) is Uri
    assert str(links["mlflow_tracking_uri"]).startswith(f"sqlite:///{mlflow_notebook.folder}/")
    mlflow = MlflowClient(tracking_uri=str(links["mlflow_tracking_uri"]))
    parent = mlflow.get_run(str(links["mlflow_run_id"]))
    assert parent.info.status == "FINISHED" and parent.info.run_name == run.name
    assert parent.data.tags["zenmeta.run_id"] == str(run.id)
    nested = {}
    for step in Client(mlflow_notebook.store_url).list_steps(run):
        nested[step.name] = mlflow.get_run(str(step.metadata["mlflow"]["mlflow_run_id"]))
        assert nested[step.name].data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert nested[step.name].data.tags["zenmeta.step_run_id"] == str(step.id)
    assert set(nested) == {"prepare", "train"}
    assert nested["prepare"].data.params == {"n": "100"}
    assert nested["train"].data.metrics == {"loss": 0.125}


# -- committed notebooks ------------------------------------------------------------


def _notebook_files() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def test_the_three_walkthrough_notebooks_exist() -> None:
    """quickstart, custom_component and mlflow are all committed."""
    names = {path.name for path in _notebook_files()}
    assert {"quickstart.ipynb", "custom_component.ipynb", "mlflow.ipynb"} <= names


@pytest.mark.parametrize("path", _notebook_files(), ids=lambda path: path.name)
def test_committed_notebook_has_no_outputs_or_execution_counts(path: Path) -> None:
    """Notebooks are committed stripped (`python tests/test_notebooks.py --strip`)."""
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    dirty = [
        index
        for index, cell in enumerate(notebook.cells, 1)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, f"{path.name}: cells {dirty} (from 1) have outputs; strip them with --strip"


def _strip(paths: list[Path]) -> Iterator[Path]:
    """Remove outputs and execution counts in place; yield the files changed."""
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        changed = False
        for cell in notebook.cells:
            if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
                cell.outputs, cell.execution_count, changed = [], None, True
        if changed:
            nbformat.write(notebook, path)
            yield path


if __name__ == "__main__":
    if sys.argv[1:] != ["--strip"]:
        sys.exit(f"usage: {os.path.basename(sys.argv[0])} --strip")
    for stripped in _strip(_notebook_files()):
        print(f"stripped {stripped.relative_to(NOTEBOOKS.parent)}")


def test_an_empty_run_list_names_the_store_it_read(tmp_path: Path) -> None:
    """ "no runs" in a notebook says which store was read."""
    zenmeta.configure(store=str(tmp_path / "runs.db"))
    with zenmeta.pipeline_run("p"):
        pass
    zenmeta.flush()
    empty = zenmeta.Client(str(tmp_path / "runs.db")).list_runs(pipeline="none")
    assert (
        empty._repr_html_() == f"<p><i>no runs</i> in <code>sqlite:///{tmp_path}/runs.db</code></p>"
    )
