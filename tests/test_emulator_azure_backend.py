"""`--backend azure` past its seam: the Azure backend submits through the real azureml-core to
the emulator (`amlocal serve`), given the emulator's config.json as the workspace config.

The translation, the input upload to the default datastore (through the emulator's https blob
route, while the user's own HTTPS_PROXY for other hosts stays set), the data reference mounted
read-only in the local run, the self-contained Dockerfile built here as Azure would build it,
streaming (wait_for_completion(show_output=True)), metrics, files, cancel and register_model.

The chainer image of the Azure Dockerfile (with azureml-core in it) is built once per engine and
cached: the first test pays for it (about 70 s here), the others find it.
"""

import json
import os
import subprocess
import sys
import time

import pytest

pytest.importorskip("azureml.core", reason="the azure extra (CI installs it)")

from conftest import MNIST_DIR, TRAINER_DIR, write_script  # noqa: E402
from test_cli import wait_for  # noqa: E402

# A proxy the user has for the rest of the world; nothing answers there. The blob route must
# not depend on it, and must not need it to be unset.
USERS_PROXY = "http://127.0.0.1:9"


def amlocal(*args, home, timeout=900, **extra):
    """`amlocal ARGS` as a user runs it, over the run history `home`."""
    environment = {**os.environ, "AMLOCAL_HOME": str(home), "HTTPS_PROXY": USERS_PROXY,
                   "AMLOCAL_AZURE_POLL_S": "0.5", **extra}
    return subprocess.run([sys.executable, "-m", "amlocal", *map(str, args)], env=environment,
                          capture_output=True, text=True, timeout=timeout)


def last_json(result):
    return json.loads(result.stdout.strip().splitlines()[-1])


def show(run_id, home):
    result = amlocal("runs", "show", run_id, "--json", home=home)
    assert result.returncode == 0, result.stderr
    return last_json(result)


@pytest.fixture(scope="module")
def compute(emulator):
    """A local compute target in the emulator's history: the cluster the runs go to."""
    result = amlocal("compute", "create", "cpu-az", "--vm-size", "STANDARD_D2_V2",
                     "--max-nodes", "1", home=emulator.home)
    assert result.returncode == 0, result.stderr
    return "cpu-az"


@pytest.mark.docker
def test_chainer_mnist_on_the_azure_backend_against_the_emulator(emulator, compute, docker_client):
    started = time.monotonic()
    result = amlocal("run", TRAINER_DIR, "--script", "chainer_mnist.py", "--backend", "azure",
                     "--workspace-config", emulator.config_path, "--compute", compute,
                     "--input", f"mnist={MNIST_DIR}", "--json", "--",
                     "--epochs", "2", "--data-dir", "$AZUREML_DATAREFERENCE_mnist",
                     home=emulator.home)
    elapsed = time.monotonic() - started

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    record = last_json(result)
    # Streamed by azureml-core's show_output from the emulator's run history.
    assert "Streaming azureml-logs/70_driver_log.txt" in result.stdout
    assert "test_accuracy" in result.stdout
    assert "Uploading input mnist" in result.stderr
    assert record["status"] == "Completed", record.get("error")
    assert record["portal_url"].startswith(emulator.endpoint)
    assert record["uploads"][0]["path_on_datastore"].startswith("amlocal-inputs/mnist/")

    metrics = last_json(amlocal("runs", "metrics", record["id"], "--json", home=emulator.home))
    assert len(metrics["Accuracy"]) == 2 and metrics["Accuracy"][-1] > 0.8
    files = amlocal("runs", "files", record["id"], home=emulator.home).stdout.split()
    assert "outputs/model.npz" in files

    # One history: the emulator's local run is the run, and it carries its Azure side.
    shown = show(record["id"], emulator.home)
    assert (shown["backend"], shown["executor"], shown["status"]) == ("local", "docker", "Completed")
    azure = json.loads(shown["properties"]["amlocal.azure"])
    assert azure["config_file"] == str(emulator.config_path)
    assert azure["environment"] == "amlocal-chainer"
    # The data reference is the uploaded datastore folder, mounted read-only.
    assert "/emulator/blobs/" in shown["inputs"]["mnist"]
    assert shown["arguments"][-1] == "$AZUREML_DATAREFERENCE_mnist"
    # The Dockerfile Azure gets is built here unchanged, on the local base with the host's pip
    # settings, and the build log says so.
    build_log = (emulator.home / "runs" / record["id"] / "azureml-logs"
                 / "20_image_build_log.txt")
    if build_log.exists():  # (absent when the image was found in cache)
        text = build_log.read_text()
        assert "Its base image (ARG BASE_IMAGE, python:3.11-slim-bookworm on Azure)" in text
    assert shown["image"].startswith("amlocal/custom:")
    print(f"chainer_mnist on --backend azure through the emulator: {elapsed:.1f} s")


CHATTY = """\
import os
from azureml.core.run import Run

run = Run.get_context()
print("context:", type(run).__name__)
for loss in (0.5, 0.25):
    run.log("loss", loss)
os.makedirs("outputs", exist_ok=True)
with open("outputs/model.txt", "w") as out:
    out.write("weights")
print("done")
"""


@pytest.mark.docker
def test_a_run_from_another_history_keeps_its_azure_record_there(emulator, compute, docker_client,
                                                                 tmp_path):
    """A run history of its own (another machine's, say) submits to the emulator: its record is
    an Azure run whose metrics, files and model registration go through azureml-core."""
    home = tmp_path / "client-home"
    source = write_script(tmp_path / "src", "train.py", CHATTY)
    result = amlocal("run", source, "--script", "train.py", "--recipe", "chainer",
                     "--backend", "azure", "--workspace-config", emulator.config_path,
                     "--compute", compute, "--experiment", "from-afar", "--json", home=home)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    record = last_json(result)
    assert "context: _SubmittedRun" in result.stdout
    assert (record["backend"], record["status"]) == ("azure", "Completed")
    metrics = last_json(amlocal("runs", "metrics", record["id"], "--json", home=home))
    assert metrics["loss"] == [0.5, 0.25]
    assert "outputs/model.txt" in amlocal("runs", "files", record["id"], home=home).stdout.split()
    local = show(record["id"], emulator.home)
    assert (local["backend"], local["executor"], local["status"]) == ("local", "docker", "Completed")

    from amlocal.backends import open_run

    model = open_run(record["id"], home=home).register_model("afar-model",
                                                             model_path="outputs/model.txt")
    assert (model["name"], model["version"]) == ("afar-model", 1)
    listed = last_json(amlocal("models", "list", "--json", home=emulator.home))
    assert any(item["name"] == "afar-model" and item["run_id"] == record["id"] for item in listed)


@pytest.mark.docker
def test_a_file_input_is_mounted_as_that_file(emulator, compute, docker_client, tmp_path):
    """An input that is one file is uploaded into its folder of the datastore and referenced
    as the file (translate_v1.InputUpload.path_on_datastore): the run reads that file."""
    rows = tmp_path / "rows.csv"
    rows.write_text("1,2,3\n")
    source = write_script(tmp_path / "src", "read.py",
                          "import os\nprint('rows:', open(os.environ['AZUREML_DATAREFERENCE_rows'])"
                          ".read().strip())\n")
    result = amlocal("run", source, "--script", "read.py", "--recipe", "chainer",
                     "--backend", "azure", "--workspace-config", emulator.config_path,
                     "--compute", compute, "--input", f"rows={rows}", "--json",
                     home=emulator.home)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "rows: 1,2,3" in result.stdout
    assert show(last_json(result)["id"], emulator.home)["inputs"]["rows"].endswith("/rows.csv")


@pytest.mark.docker
def test_canceling_an_azure_run_cancels_the_emulators_run(emulator, compute, docker_client,
                                                          tmp_path):
    home = tmp_path / "client-home"
    source = write_script(tmp_path / "src", "long.py",
                          "import time\nprint('started', flush=True)\ntime.sleep(600)\n")
    submitted = amlocal("run", source, "--script", "long.py", "--recipe", "chainer",
                        "--backend", "azure", "--workspace-config", emulator.config_path,
                        "--compute", compute, "--experiment", "to-cancel", "--detach", "--json",
                        home=home)
    assert submitted.returncode == 0, submitted.stderr
    run_id = last_json(submitted)["id"]
    wait_for(lambda: show(run_id, emulator.home)["status"] == "Running", timeout=120,
             interval=0.5)

    canceled = amlocal("runs", "cancel", run_id, "--json", home=home, timeout=180)

    assert canceled.returncode == 0, canceled.stderr
    assert wait_for(lambda: show(run_id, home)["status"] == "Canceled", timeout=60,
                    interval=0.5)
    assert show(run_id, emulator.home)["status"] == "Canceled"


def request_log(emulator):
    log = emulator.home / "emulator" / "requests.log"
    return log.read_text() if log.exists() else ""


def submissions(emulator):
    log = request_log(emulator)
    return log.count("/startrun") + log.count("/snapshotrun") + log.count("/snapshots")


def test_dry_run_against_the_emulators_config_submits_nothing(emulator):
    before = submissions(emulator)
    result = amlocal("run", TRAINER_DIR, "--script", "chainer_mnist.py", "--backend", "azure",
                     "--workspace-config", emulator.config_path, "--compute", "cpu-dry",
                     "--input", f"mnist={MNIST_DIR}", "--dry-run", "--json", "--",
                     "--data-dir", "$AZUREML_DATAREFERENCE_mnist", home=emulator.home)

    assert result.returncode == 0, result.stderr
    document = last_json(result)
    assert document["dry_run"] is True
    assert document["workspace"]["workspace_name"] == "local"
    assert "azureml-core~=1.61.0" in document["environment"]["dockerfile"]
    assert "cpu-dry" not in request_log(emulator)
    assert submissions(emulator) == before


def test_an_emulator_config_whose_emulator_is_gone_says_start_amlocal_serve(tmp_path):
    home = tmp_path / "home"
    (home / "emulator").mkdir(parents=True)
    config = home / "emulator" / "config.json"
    config.write_text(json.dumps({
        "subscription_id": "00000000-0000-0000-0000-000000000000", "resource_group": "amlocal",
        "workspace_name": "local", "endpoint": "http://127.0.0.1:9"}))
    source = write_script(tmp_path / "src", "train.py", "print('never')\n")

    result = amlocal("run", source, "--script", "train.py", "--backend", "azure",
                     "--workspace-config", config, "--compute", "cpu", home=home, timeout=120)

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "start one with `amlocal serve`" in lines[0], result.stderr


@pytest.mark.docker
def test_a_dockerfile_that_takes_no_pip_settings_installs_through_the_hosts(docker_client):
    """The self-contained Dockerfile the Azure backend sends writes an empty pip configuration
    of its own: built here unchanged, its pip still reaches the index with the host's settings
    (CA bundle, index URLs), from the pip-configured local base."""
    import uuid

    from amlocal.backends.local import images

    dockerfile = ("ARG BASE_IMAGE=python:3.11-slim-bookworm\nFROM ${BASE_IMAGE}\n"
                  f"# {uuid.uuid4()} (a build of its own)\n"
                  "RUN mkdir -p /tmp/amlocal-pip && : > /tmp/amlocal-pip/pip.conf\n"
                  "ENV PIP_CONFIG_FILE=/tmp/amlocal-pip/pip.conf\n"
                  "RUN python3 -m pip download --no-deps --dest /tmp/wheels six==1.16.0\n")
    lines = []
    prepared = images.ensure_image(docker_client, "python", dockerfile=dockerfile,
                                   on_line=lines.append)
    try:
        assert not prepared.cached
        assert any(line.startswith("The Dockerfile takes no pip settings from the build context: "
                                   f"it is built on {images.PIP_BASE_REPOSITORY}:") for line in lines)
        assert any("Saved /tmp/wheels/six-1.16.0" in line for line in lines), "\n".join(lines[-20:])
    finally:
        docker_client.images.remove(prepared.tag, force=True)
