"""Ray: steps of ``zenmeta.integrations.ray.remote`` tasks belong to the run.

Ray listens on every interface, whatever address it is given, and tests here
may use loopback only; so Ray runs in a script inside a network namespace of
its own (``unshare -n``, loopback up), where every listener is loopback and
nothing leaves the machine. The script records into a SQLite file; this
process reads the file afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import zenmeta
from zenmeta import Client

pytest.importorskip("ray")

from zenmeta.integrations import ray as zenmeta_ray

pytestmark = pytest.mark.slow

_SCRIPT = """
import json
import sys

import ray

import zenmeta
from zenmeta.integrations import ray as zenmeta_ray


@zenmeta.track_step
def square(x):
    return x * x


@zenmeta.track_step
def square_twice(x):
    return square(square(x))


def main(url):
    zenmeta.configure(store=url)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    remote_square = zenmeta_ray.remote(square)
    remote_twice = zenmeta_ray.remote(square_twice, num_cpus=1)
    with zenmeta.pipeline_run("on_ray") as run:
        squares = ray.get([remote_square.remote(x) for x in range(4)])
        twice = ray.get(remote_twice.options(max_retries=0).remote(x=3))

        @zenmeta.track_step
        def fan_out():
            return ray.get([remote_square.remote(x) for x in (5, 6)])

        fanned = fan_out()
    ray.shutdown()
    print(json.dumps({"run": str(run.id), "squares": squares, "twice": twice, "fanned": fanned}))


if __name__ == "__main__":
    main(sys.argv[1])
"""


def _own_network_namespace() -> str | None:
    """Why a network namespace cannot be made here, or None when it can."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare or ip is not installed"
    probe = subprocess.run(
        ["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        return f"cannot make a network namespace: {probe.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def ray_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, object]]:
    """One Ray session (6-7 s to start) in its own network namespace; the
    store's URL and what the script printed."""
    reason = _own_network_namespace()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"Ray must run in a network namespace of its own: {reason}")
        pytest.skip(f"Ray runs only in a network namespace of its own: {reason}")
    folder = tmp_path_factory.mktemp("ray")
    script = folder / "pipeline.py"
    script.write_text(_SCRIPT)
    url = f"sqlite:///{folder}/store/zenmeta.db"
    python = f"exec {sys.executable} -W error {script} {url}"
    env = {
        **os.environ,
        "HOME": str(folder),  # Ray saves a token under ~/.ray
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    done = subprocess.run(
        ["unshare", "-n", "sh", "-c", f"ip link set lo up && {python}"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=folder,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return url, json.loads(done.stdout.strip().splitlines()[-1])


def test_remote_tasks_steps_belong_to_the_run(ray_run: tuple[str, dict[str, object]]) -> None:
    """Every step of every remote task is in the run that submitted it; no implicit run."""
    url, printed = ray_run
    assert printed["squares"] == [0, 1, 4, 9]
    assert printed["twice"] == 81
    assert printed["fanned"] == [25, 36]
    runs = Client(url).list_runs()
    assert [(str(run.id), run.tags) for run in runs] == [(printed["run"], ())]
    steps = Client(url).list_steps(printed["run"])
    assert sorted(step.step_name for step in steps) == sorted(
        ["square"] * 4 + ["square_twice", "square", "square"] + ["fan_out", "square", "square"]
    )
    assert all(step.status == "completed" for step in steps)


def test_remote_tasks_steps_have_the_right_parents(
    ray_run: tuple[str, dict[str, object]],
) -> None:
    """Tasks submitted from the run have no parent; from a step, that step;
    a step called inside a task's step is its child."""
    url, printed = ray_run
    steps = Client(url).list_steps(printed["run"])
    by_id = {step.id: step for step in steps}
    (outer,) = (step for step in steps if step.step_name == "fan_out")
    (twice,) = (step for step in steps if step.step_name == "square_twice")
    parents = sorted(
        "-" if step.parent_step_run_id is None else by_id[step.parent_step_run_id].step_name
        for step in steps
        if step.step_name == "square"
    )
    assert parents == ["-"] * 4 + ["fan_out"] * 2 + ["square_twice"] * 2
    assert outer.parent_step_run_id is None
    assert twice.parent_step_run_id is None


def test_remote_tasks_steps_carry_rays_task_id_as_their_task_key(
    ray_run: tuple[str, dict[str, object]],
) -> None:
    """Each remote task's steps are grouped by Ray's task id; a step of the
    driver has none. A step called inside a task's step shares its task."""
    url, printed = ray_run
    steps = Client(url).list_steps(printed["run"])
    (outer,) = (step for step in steps if step.step_name == "fan_out")
    (twice,) = (step for step in steps if step.step_name == "square_twice")
    remote = [step for step in steps if step is not outer]
    assert outer.task_key is None
    assert all(step.task_key and step.attempt == 1 for step in remote)
    inside_twice = [step for step in steps if step.parent_step_run_id == twice.id]
    assert {step.task_key for step in inside_twice} == {twice.task_key}
    assert len({step.task_key for step in remote}) == 7, "4 + 1 + 2 tasks"


def test_remote_refuses_what_ray_cannot_run() -> None:
    """A class is not a function: remote() says so before Ray is asked."""
    with pytest.raises(TypeError, match="takes a function"):
        zenmeta_ray.remote(Path)


def test_remote_without_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where Ray cannot be imported, remote() says which extra to install."""
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(zenmeta.MissingExtraError, match=r"pip install 'zenmeta\[ray\]'"):
        zenmeta_ray.remote(lambda: None)


def test_the_hidden_keyword_is_zenmetas_own() -> None:
    """Passing the carrier keyword by hand is refused: it would be overwritten."""
    remote = zenmeta_ray.RemoteStep(remote_function=None)
    with pytest.raises(TypeError, match="zenmeta's own"):
        remote.remote(**{zenmeta_ray.CARRIER_KEYWORD: None})


def test_the_task_function_keeps_the_signature_and_adds_the_hidden_keyword() -> None:
    """Ray checks calls against the signature: the user's, plus the hidden keyword."""
    import inspect

    def train(data: list[int], *, epochs: int = 1, **extra: object) -> int:
        return epochs

    shown = inspect.signature(zenmeta_ray._accepting_carrier(train))
    assert list(shown.parameters) == ["data", "epochs", zenmeta_ray.CARRIER_KEYWORD, "extra"]
    assert zenmeta_ray._accepting_carrier(train)([1], epochs=3) == 3
