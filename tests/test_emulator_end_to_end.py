"""A user's own Azure ML code, unchanged, against `amlocal serve`: it imports only azureml.core
(and amlocal.emulator.workspace() for the workspace), as a team's integration test would.

Compute get-or-create, Experiment.submit(ScriptRunConfig(..., environment=
Environment.from_pip_requirements(...))) built and run in Docker, wait_for_completion(show_output=
True), the script's metrics, tags and files read back (one it uploaded with run.upload_file),
files downloaded, a model registered and downloaded with Model(ws, name).download; inside the run, Run.get_context() is azureml-core's own
live run; and the run is in `amlocal runs show`.
"""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("azureml.core", reason="the azure extra (CI installs it)")

from azureml.core import Environment, Experiment, Model, ScriptRunConfig  # noqa: E402
from azureml.core.compute import AmlCompute, ComputeTarget  # noqa: E402
from azureml.exceptions import ComputeTargetException  # noqa: E402

from amlocal.emulator import workspace  # noqa: E402

SCRIPT = """\
import os
from azureml.core.run import Run

run = Run.get_context()
print("context:", type(run).__name__)
for loss in (0.9, 0.5, 0.25):
    run.log("loss", loss)
run.log_list("widths", [32, 64])
run.tag("stage", "end-to-end")
os.makedirs("outputs", exist_ok=True)
with open("outputs/model.bin", "wb") as out:
    out.write(bytes(range(256)) * 4)
with open("summary.txt", "w") as out:
    out.write("loss went from 0.9 to 0.25\\n")
run.upload_file("reports/summary.txt", "summary.txt")
print("done")
"""

# The image must hold azureml-core for the script's own SDK to be the live run; it is built
# once through the host's pip settings, as every pip environment is.
REQUIREMENTS = "azureml-core==1.61.0.post4\n"


@pytest.mark.docker
def test_unchanged_azureml_code_runs_against_the_emulator(emulator, docker_client, tmp_path,
                                                          capsys):
    ws = workspace()
    try:
        cluster = ComputeTarget(workspace=ws, name="cpu-e2e")
    except ComputeTargetException:
        cluster = ComputeTarget.create(ws, "cpu-e2e", AmlCompute.provisioning_configuration(
            vm_size="STANDARD_D2_V2", max_nodes=1))
        cluster.wait_for_completion(show_output=False)
    assert ComputeTarget(workspace=ws, name="cpu-e2e").name == "cpu-e2e"

    source = tmp_path / "src"
    source.mkdir()
    (source / "train.py").write_text(SCRIPT)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(REQUIREMENTS)
    environment = Environment.from_pip_requirements("e2e-env", str(requirements))
    config = ScriptRunConfig(source_directory=str(source), script="train.py",
                             compute_target=cluster, environment=environment)

    run = Experiment(ws, "end-to-end").submit(config)
    details = run.wait_for_completion(show_output=True)

    printed = capsys.readouterr().out
    assert details["status"] == "Completed", details.get("error")
    assert "context: _SubmittedRun" in printed
    assert "done" in printed
    metrics = run.get_metrics()
    assert metrics["loss"] == [0.9, 0.5, 0.25]
    assert metrics["widths"] == [32, 64]
    assert run.get_tags()["stage"] == "end-to-end"
    names = run.get_file_names()
    assert "outputs/model.bin" in names
    run.download_file("outputs/model.bin", str(tmp_path / "model.bin"))
    assert (tmp_path / "model.bin").read_bytes() == bytes(range(256)) * 4
    assert "reports/summary.txt" in names  # uploaded by the script through azureml-core
    run.download_file("reports/summary.txt", str(tmp_path / "summary.txt"))
    assert (tmp_path / "summary.txt").read_text() == "loss went from 0.9 to 0.25\n"

    model = run.register_model("e2e-model", model_path="outputs/model.bin",
                               tags={"from": "e2e"})
    assert model.version == 1
    target = tmp_path / "downloaded"
    path = Model(ws, "e2e-model").download(target_dir=str(target))
    assert open(path, "rb").read() == bytes(range(256)) * 4

    shown = subprocess.run([sys.executable, "-m", "amlocal", "runs", "show", run.id, "--json"],
                           env={**os.environ, "AMLOCAL_HOME": str(emulator.home)},
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    assert (record["id"], record["status"], record["experiment"], record["executor"]) == \
        (run.id, "Completed", "end-to-end", "docker")
