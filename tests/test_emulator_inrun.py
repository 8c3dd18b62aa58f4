"""Inside a local run, the unmodified azureml-core's Run.get_context() is the SDK's live run
(`_SubmittedRun`), talking to the emulator endpoint the run's driver serves (a Unix socket in the
run's folder, relayed to 127.0.0.1 by the launcher) with a token for that run alone; its blob
uploads (upload_file, upload_folder, log_image) go through the https route served beside it; a
Python or image without azureml-core keeps the stand-in. Both land in the same run history."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from amlocal.backends.history.store import RunStore
from amlocal.backends.local.processes import process_alive
from conftest import write_script
from test_cli import invoke, last_json, wait_for

pytest.importorskip("azureml.core", reason="the azure extra (CI installs it)")

from azureml.core import Experiment, Run  # noqa: E402

import amlocal.emulator  # noqa: E402
from amlocal.backends.base import RunSpec  # noqa: E402
from amlocal.backends.local import LocalBackend  # noqa: E402

AMLOCAL = [sys.executable, "-c", "from amlocal.cli.main import main; main()"]

SCRIPT = """\
import os
from azureml.core.run import Run
run = Run.get_context()
print("context", type(run).__name__, flush=True)
run.log("Accuracy", 0.5)
run.log("Accuracy", 0.75)
run.log_list("losses", [0.9, 0.5])
run.log_row("roc", fpr=0.1, tpr=0.8)
run.log_table("summary", {"epoch": [1, 2], "loss": [0.5, 0.25]})
run.tag("team", "vision")
run.add_properties({"commit": "abc123"})
child = run.child_run(name="fold-1")
child.log("fold_accuracy", 0.6)
child.tag("fold", "1")
child.complete()
print("child", child.id, flush=True)
"""

EXPECTED_METRICS = {"Accuracy": [0.5, 0.75], "losses": [0.9, 0.5],
                    "roc": {"fpr": 0.1, "tpr": 0.8}, "summary": {"epoch": [1, 2], "loss": [0.5, 0.25]}}


def submit(home, source, script="train.py", **spec):
    handle = LocalBackend(home).submit(RunSpec(source_dir=source, script=script,
                                               experiment="inrun", executor="process", **spec))
    details = handle.wait(timeout=120)
    return handle, details


def driver_log(handle):
    return (handle.run_dir / "azureml-logs" / "70_driver_log.txt").read_text()


def amlocal_json(*args):
    result = subprocess.run([*AMLOCAL, *args, "--json"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def logged(emulator, tmp_path_factory):
    """A process-executor run of SCRIPT (its Python is this one, which has azureml-core)."""
    source = write_script(tmp_path_factory.mktemp("src"), "train.py", SCRIPT)
    handle, details = submit(emulator.home, source)
    return handle, details


def test_in_a_run_get_context_is_the_sdks_submitted_run(emulator, logged):
    handle, details = logged

    log = driver_log(handle)
    assert details["status"] == "Completed", details["error"]
    assert "context _SubmittedRun" in log
    assert f"/runs/{handle.id}/batch 200" in emulator.request_log()  # the run's driver logs its requests


def test_what_the_sdk_logged_reads_back_through_amlocal_and_the_emulator(emulator, logged):
    handle, _ = logged

    shown = amlocal_json("runs", "show", handle.id)
    metrics = amlocal_json("runs", "metrics", handle.id)
    through_sdk = Run(Experiment(amlocal.emulator.workspace(), "inrun"), handle.id)

    assert shown["tags"] == {"team": "vision"} and shown["properties"] == {"commit": "abc123"}
    assert metrics == {"Accuracy": [0.5, 0.75], "losses": [[0.9, 0.5]],
                       "roc": [{"fpr": 0.1, "tpr": 0.8}],
                       "summary": [{"epoch": [1, 2], "loss": [0.5, 0.25]}]}
    assert through_sdk.get_metrics() == EXPECTED_METRICS
    assert through_sdk.get_tags() == {"team": "vision"}


def test_a_child_run_made_in_the_run_is_recorded_under_it(emulator, logged):
    handle, _ = logged

    children = list(Run(Experiment(amlocal.emulator.workspace(), "inrun"), handle.id)
                    .get_children())

    assert len(children) == 1
    child = children[0]
    assert f"child {child.id}" in driver_log(handle)
    assert child.get_status() == "Completed"
    assert child.get_metrics() == {"fold_accuracy": 0.6}
    assert child.get_tags() == {"fold": "1"}
    record = LocalBackend(emulator.home).get_run(child.id).get_details()
    # azureml-core names a child "<parent's name>>fold-1"; the parent has no name.
    assert record["parent_id"] == handle.id and record["display_name"] == ">fold-1"
    statuses = [status for status, _at in LocalBackend(emulator.home).store.status_history(child.id)]
    assert statuses == ["NotStarted", "Preparing", "Queued", "Running", "Finalizing", "Completed"]


def test_a_runs_token_cannot_touch_another_run(emulator, logged, tmp_path):
    other, _ = logged
    source = write_script(tmp_path / "src", "train.py", textwrap.dedent("""
        import os
        from azureml.core.run import Run
        run = Run.get_context()
        for attempt in ("tag", "read"):
            try:
                other = Run(run.experiment, os.environ["OTHER_RUN"])
                other.tag("stolen", "yes") if attempt == "tag" else other.get_tags()
                print(attempt, "allowed", flush=True)
            except Exception as error:
                print(attempt, "refused", type(error).__name__, "AuthorizationFailed" in str(error),
                      flush=True)
        run.tag("own", "fine")
    """))

    handle, details = submit(emulator.home, source, environment_variables={"OTHER_RUN": other.id})

    log = driver_log(handle)
    assert details["status"] == "Completed", details["error"]
    assert "tag refused" in log and "read refused" in log, log
    assert "AuthorizationFailed" in emulator.request_log() or " 403 " in emulator.request_log()
    assert LocalBackend(emulator.home).get_run(other.id).get_details()["tags"] == {"team": "vision"}
    assert details["tags"] == {"own": "fine"}


def test_run_fail_in_the_script_fails_the_run_with_its_message(emulator, tmp_path):
    source = write_script(tmp_path / "src", "train.py", textwrap.dedent("""
        from azureml.core.run import Run
        Run.get_context().fail(error_details="the data was bad")
    """))

    _handle, details = submit(emulator.home, source)

    assert details["status"] == "Failed"
    assert details["exit_code"] == 0
    assert "the data was bad" in details["error"]


def test_metrics_not_yet_sent_when_the_script_ends_are_kept(emulator, tmp_path):
    # azureml-core sends metrics from a thread, once a second; a script that ends right after
    # logging (no complete()) keeps them, as on Azure ML.
    source = write_script(tmp_path / "src", "train.py", textwrap.dedent("""
        from azureml.core.run import Run
        run = Run.get_context()
        for step in range(100):
            run.log("loss", 1.0 / (step + 1))
    """))

    handle, details = submit(emulator.home, source)

    assert details["status"] == "Completed", details["error"]
    assert len(handle.get_metrics()["loss"]) == 100


def test_the_endpoint_works_from_a_run_folder_deeper_than_a_socket_path(emulator, tmp_path):
    # A Unix socket's path holds 108 bytes; a run folder's path may be far longer.
    deep_home = tmp_path.joinpath(*["a-rather-long-folder-name"] * 6) / "home"
    source = write_script(tmp_path / "src", "train.py", textwrap.dedent("""
        from azureml.core.run import Run
        run = Run.get_context()
        print("context", type(run).__name__, flush=True)
        run.log("deep", 1)
    """))

    handle, details = submit(deep_home, source)

    assert len(str(handle.run_dir / "emulator" / "api.sock")) > 108
    assert details["status"] == "Completed", details["error"]
    assert "context _SubmittedRun" in driver_log(handle)
    assert handle.get_metrics() == {"deep": [1]}


def test_a_driver_that_adopts_the_run_serves_its_endpoint_again(amlocal_home, tmp_path):
    # The script logs, its driver is killed, a new driver adopts the run (recovery.py): what the
    # script logs after that still reaches the run history, at the same address.
    go = tmp_path / "go"
    source = write_script(tmp_path / "src", "train.py", textwrap.dedent("""
        import os, sys, time
        from azureml.core.run import Run
        run = Run.get_context()
        run.log("phase", 1)
        run.flush()
        print("started", flush=True)
        deadline = time.time() + 120
        while not os.path.exists(sys.argv[1]) and time.time() < deadline:
            time.sleep(0.1)
        run.log("phase", 2)
        run.tag("adopted", "yes")
        run.upload_file("after/adoption.py", __file__)  # the https route is served again too
    """))
    run_id = last_json(invoke("run", source, "--script", "train.py", "--executor", "process",
                              "--detach", "--json", "--", go))["id"]
    store = RunStore()
    wait_for(lambda: "started" in invoke("runs", "logs", run_id).stdout, timeout=120)
    supervisor = store.get_run(run_id)["driver_pid"]

    os.kill(supervisor, signal.SIGKILL)
    wait_for(lambda: not process_alive(supervisor), timeout=10)
    invoke("runs", "show", run_id)  # hands the run to a new driver
    wait_for(lambda: store.get_run(run_id)["driver_pid"] != supervisor, timeout=30)
    wait_for(lambda: (store.run_dir(run_id) / "emulator" / "api.sock").exists(), timeout=30)
    go.touch()
    waited = last_json(invoke("runs", "wait", run_id, "--json"))

    assert waited["status"] == "Completed", waited["error"]
    assert waited["tags"] == {"adopted": "yes"}
    assert last_json(invoke("runs", "metrics", run_id, "--json")) == {"phase": [1, 2]}
    assert "after/adoption.py" in last_json(invoke("runs", "files", run_id, "--json"))


def test_without_the_in_run_sdk_the_stand_in_takes_the_call(emulator, tmp_path, monkeypatch):
    monkeypatch.setenv("AMLOCAL_IN_RUN_SDK", "0")
    source = write_script(tmp_path / "src", "train.py", textwrap.dedent("""
        import os
        from azureml.core.run import Run
        run = Run.get_context()
        print("context", type(run).__module__, "AZUREML_RUN_TOKEN" in os.environ, flush=True)
        run.log("standin", 1)
    """))

    handle, details = submit(emulator.home, source)

    assert details["status"] == "Completed", details["error"]
    assert "context amlocal_run False" in driver_log(handle)
    assert handle.get_metrics() == {"standin": [1]}


def test_a_run_with_a_huge_time_limit_gets_a_token_azureml_core_can_read(emulator, tmp_path):
    # The first token lasts as long as the run may, within what a datetime holds.
    source = write_script(tmp_path / "src", "train.py", textwrap.dedent("""
        from azureml.core.run import Run
        Run.get_context().log("long", 1)
    """))

    handle, details = submit(emulator.home, source, max_run_duration_seconds=2**63 - 1)

    assert details["status"] == "Completed", details["error"]
    assert handle.get_metrics() == {"long": [1]}


def test_a_proxy_and_azureml_variables_of_the_submitters_shell_do_not_get_in_the_way(
        emulator, tmp_path, monkeypatch):
    # The process executor passes the proxy settings on (a download needs them): the endpoint on
    # 127.0.0.1 is added to NO_PROXY, the user's HTTPS_PROXY stays for every host but the blob
    # host, which a variable of its own sends to the run's https route (service/config.py).
    # AZUREML_* of the shell are not passed on: amlocal sets them.
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "corp.example")
    monkeypatch.setenv("AZUREML_RUN_TOKEN", "not-a-token")
    source = write_script(tmp_path / "src", "train.py", textwrap.dedent("""
        import os
        from azureml.core.run import Run
        print("no_proxy", os.environ["NO_PROXY"], flush=True)
        print("https_proxy", os.environ["https_proxy"], os.environ["HTTPS_PROXY"], flush=True)
        run = Run.get_context()
        run.log("through", 1)
        run.upload_file("kept/train.py", __file__)
    """))

    handle, details = submit(emulator.home, source)

    log = driver_log(handle)
    assert details["status"] == "Completed", (details["error"], log)
    assert "no_proxy corp.example,127.0.0.1" in log
    assert "https_proxy http://127.0.0.1:9 http://127.0.0.1:9" in log
    assert handle.get_metrics() == {"through": [1]}
    assert "kept/train.py" in handle.get_file_names()


def test_the_endpoint_is_gone_once_the_run_has_ended(emulator, logged):
    handle, _ = logged

    assert not (handle.run_dir / "emulator").exists()


# -- blob uploads through azureml-core inside the run ---------------------------------------------

UPLOAD_SCRIPT = """\
import os
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from azureml.core.run import Run
run = Run.get_context()
with open("notes.bin", "wb") as handle:
    handle.write(bytes(range(256)) * 3)
run.upload_file("results/notes.bin", "notes.bin")
os.makedirs("folder/sub")
with open("folder/sub/c.txt", "w") as handle:
    handle.write("c")
with open("folder/d.txt", "w") as handle:
    handle.write("d")
run.upload_folder("bundle", "folder")
plt.plot([1, 2, 3], [3, 1, 2])
run.log_image("loss curve", plot=plt)
plt.savefig("digit.png")
run.log_image("digit", path="digit.png")
os.makedirs("outputs", exist_ok=True)
with open("outputs/model.bin", "wb") as handle:
    handle.write(os.urandom(1 << 20))
print("uploaded", flush=True)
print("HTTPS_PROXY set:", "HTTPS_PROXY" in os.environ, flush=True)
"""


def check_uploads(emulator, handle, details, tmp_path):
    """What UPLOAD_SCRIPT (or DOCKER_UPLOAD_SCRIPT) uploaded is the run's, byte for byte, in
    `amlocal runs files`, through the SDK and in the report."""
    log = driver_log(handle)
    assert details["status"] == "Completed", (details["error"], log)
    assert "uploaded" in log
    names = amlocal_json("runs", "files", handle.id)
    through_sdk = Run(Experiment(amlocal.emulator.workspace(), "inrun"), handle.id)
    assert {"results/notes.bin", "bundle/sub/c.txt", "bundle/d.txt",
            "outputs/model.bin"} <= set(names)
    assert set(names) == set(through_sdk.get_file_names())
    through_sdk.download_file("results/notes.bin", str(tmp_path / "notes.bin"))
    assert (tmp_path / "notes.bin").read_bytes() == bytes(range(256)) * 3
    assert (handle.run_dir / "uploads" / "bundle" / "sub" / "c.txt").read_text() == "c"
    # An image is a file of the run, named by its metric (azureml-core: a plot is uploaded as
    # "<name>_<time>.png", a path under its own file name).
    prefix = f"aml://artifactId/ExperimentRun/dcid.{handle.id}/"
    sdk_metrics = through_sdk.get_metrics()
    images = [handle.get_metrics()[name][0]["file"] for name in ("loss curve", "digit")]
    assert images[0].startswith("loss curve_") and images[1] == "digit.png", images
    assert [sdk_metrics["loss curve"], sdk_metrics["digit"]] == [prefix + name for name in images]
    for image in images:
        assert image in names
        through_sdk.download_file(image, str(tmp_path / "image.png"))
        assert (tmp_path / "image.png").read_bytes().startswith(b"\x89PNG")
    report = subprocess.run([*AMLOCAL, "runs", "report", handle.id, "-o", str(tmp_path / "report")],
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    html = (tmp_path / "report" / "index.html").read_text()
    assert html.count("data:image/png;base64,") >= 2  # both images, shown in the report


def test_files_and_images_uploaded_through_the_sdk_in_a_run_are_the_runs(emulator, tmp_path,
                                                                          monkeypatch):
    for name in ("HTTPS_PROXY", "https_proxy"):  # a submitter whose https goes direct
        monkeypatch.delenv(name, raising=False)
    source = write_script(tmp_path / "src", "train.py", UPLOAD_SCRIPT)

    handle, details = submit(emulator.home, source)

    check_uploads(emulator, handle, details, tmp_path)
    # A host process keeps its other https as it was: only the blob host has a proxy of its own.
    assert "HTTPS_PROXY set: False" in driver_log(handle)


FORGING_SCRIPT = """\
import json, os, sys
import requests
from azureml.core.run import Run
run = Run.get_context()
other = os.environ["OTHER_RUN"]
workspace = ("/subscriptions/{AZUREML_ARM_SUBSCRIPTION}/resourceGroups/{AZUREML_ARM_RESOURCEGROUP}"
             "/providers/Microsoft.MachineLearningServices/workspaces/{AZUREML_ARM_WORKSPACE_NAME}"
             .format(**os.environ))
bearer = {"Authorization": "Bearer " + os.environ["AZUREML_RUN_TOKEN"]}

def upload_uri(run_id):
    answer = requests.post(os.environ["AZUREML_SERVICE_ENDPOINT"] + "/artifact/v2.0" + workspace
                           + "/artifacts/batch/metadata/ExperimentRun/dcid." + run_id,
                           json={"paths": [{"path": "stolen.txt"}]}, headers=bearer)
    print("sas for", "own" if run_id == run.id else "other", answer.status_code, flush=True)
    if not answer.ok:
        return None
    return answer.json()["artifactContentInformation"]["stolen.txt"]["contentUri"]

own = upload_uri(run.id)
upload_uri(other)
attempts = {
    # its own SAS, for another run's path
    "reused": own.replace("dcid." + run.id, "dcid." + other),
    # a SAS made up by the script
    "forged": (own.split("?")[0].replace("dcid." + run.id, "dcid." + other)
               + "?sv=2021-08-06&sr=c&sp=rlw&sig=made-up"),
    # its own SAS for a prefix of another run's folder
    "datastore": own.replace("/azureml/", "/azureml-blobstore-x/"),
}
for what, uri in attempts.items():
    answer = requests.put(uri, data=b"overwritten", headers={"x-ms-blob-type": "BlockBlob"})
    print(what, answer.status_code, flush=True)
# The blob route is no proxy to the world (a container's HTTPS_PROXY; a host process's
# per-host proxy variable for the blob host).
route = os.environ.get("HTTPS_PROXY") if os.path.exists("/amlocal") else \
    os.environ["https://amlocal.blob.amlocal.internal_proxy"]
try:
    requests.get("https://example.org/", timeout=10, proxies={"https": route})
    print("world reachable", flush=True)
except requests.exceptions.ProxyError as error:
    print("world refused", "403" in str(error), flush=True)
"""


def file_bytes(handle):
    """{name: bytes} of every file of a run."""
    contents = {}
    for name in handle.get_file_names():
        with handle.open_file(name) as stream:
            contents[name] = stream.read()
    return contents


def test_a_script_cannot_write_another_runs_files_through_the_blob_route(emulator, logged,
                                                                          tmp_path):
    other, _ = logged
    before = file_bytes(other)
    source = write_script(tmp_path / "src", "train.py", FORGING_SCRIPT)

    handle, details = submit(emulator.home, source, environment_variables={"OTHER_RUN": other.id})

    log = driver_log(handle)
    assert details["status"] == "Completed", (details["error"], log)
    assert "sas for own 200" in log and "sas for other 403" in log, log
    assert "reused 403" in log and "forged 403" in log, log
    assert "datastore 403" in log, log
    assert "world refused True" in log, log
    assert file_bytes(other) == before
    assert "stolen.txt" not in other.get_file_names()


BROKEN_UPLOAD_SCRIPT = """\
import os, socket, ssl
from urllib.parse import urlsplit
import requests
from azureml.core.run import Run
run = Run.get_context()
workspace = ("/subscriptions/{AZUREML_ARM_SUBSCRIPTION}/resourceGroups/{AZUREML_ARM_RESOURCEGROUP}"
             "/providers/Microsoft.MachineLearningServices/workspaces/{AZUREML_ARM_WORKSPACE_NAME}"
             .format(**os.environ))
answer = requests.post(os.environ["AZUREML_SERVICE_ENDPOINT"] + "/artifact/v2.0" + workspace
                       + "/artifacts/batch/metadata/ExperimentRun/dcid." + run.id,
                       json={"paths": [{"path": "outputs/broken.bin"}]},
                       headers={"Authorization": "Bearer " + os.environ["AZUREML_RUN_TOKEN"]})
uri = urlsplit(answer.json()["artifactContentInformation"]["outputs/broken.bin"]["contentUri"])
proxy = urlsplit(os.environ["https://amlocal.blob.amlocal.internal_proxy"])
tunnel = socket.create_connection((proxy.hostname, proxy.port))
tunnel.sendall(b"CONNECT amlocal.blob.amlocal.internal:443 HTTP/1.1\\r\\n\\r\\n")
print("connect", tunnel.recv(4096).split(b"\\r\\n")[0].decode(), flush=True)
context = ssl.create_default_context(cafile=os.environ["REQUESTS_CA_BUNDLE"])
stream = context.wrap_socket(tunnel, server_hostname="amlocal.blob.amlocal.internal")
# Half of the body it announces, then the connection breaks.
stream.sendall(("PUT %s?%s HTTP/1.1\\r\\nHost: amlocal.blob.amlocal.internal\\r\\n"
                "x-ms-blob-type: BlockBlob\\r\\nContent-Length: %d\\r\\n\\r\\n"
                % (uri.path, uri.query, 1 << 20)).encode() + b"x" * (1 << 19))
stream.close()
print("broke the upload", flush=True)
"""


def test_an_upload_that_breaks_half_way_leaves_nothing(emulator, tmp_path):
    source = write_script(tmp_path / "src", "train.py", BROKEN_UPLOAD_SCRIPT)

    handle, details = submit(emulator.home, source)

    log = driver_log(handle)
    assert details["status"] == "Completed", (details["error"], log)
    assert "connect HTTP/1.1 200 Connection Established" in log and "broke the upload" in log
    assert "outputs/broken.bin" not in handle.get_file_names()
    assert not (handle.run_dir / "outputs" / "broken.bin").exists()
    incoming = emulator.home / "emulator" / "blobs" / ".incoming"
    assert not list(incoming.glob("*.partial")) if incoming.exists() else True


# -- docker ---------------------------------------------------------------------------------------

DOCKER_SCRIPT = """\
import socket
from azureml.core.run import Run
run = Run.get_context()
print("context", type(run).__module__, type(run).__name__, flush=True)
run.log("Accuracy", 0.98)
run.log_list("losses", [0.5, 0.25])
run.tag("where", "container")
try:
    socket.create_connection(("1.1.1.1", 53), timeout=2)
    print("network reachable", flush=True)
except OSError:
    print("network unreachable", flush=True)
"""


def docker_submit(home, source, *pip, **fields):
    spec = RunSpec(source_dir=source, script="train.py", experiment="inrun", executor="docker",
                   **fields)
    if pip:
        from dataclasses import replace

        spec = replace(spec, environment=replace(spec.environment, pip_packages=list(pip)))
    handle = LocalBackend(home).submit(spec)
    return handle, handle.wait(timeout=600)


@pytest.mark.docker
def test_a_docker_run_without_azureml_core_keeps_the_stand_in(emulator, docker_client, tmp_path):
    source = write_script(tmp_path / "src", "train.py", DOCKER_SCRIPT)

    handle, details = docker_submit(emulator.home, source)

    log = driver_log(handle)
    assert details["status"] == "Completed", details["error"]
    assert "context amlocal_run Run" in log
    assert "network unreachable" in log
    assert handle.get_metrics() == {"Accuracy": [0.98], "losses": [[0.5, 0.25]]}


@pytest.mark.docker
def test_a_docker_run_whose_image_has_azureml_core_gets_the_sdks_run(emulator, docker_client,
                                                                     tmp_path):
    # The image is the one tests/test_docker_runs.py builds (chainer recipe + azureml-core).
    source = write_script(tmp_path / "src", "train.py", DOCKER_SCRIPT)

    handle, details = docker_submit(emulator.home, source, "azureml-core")

    log = driver_log(handle)
    assert details["status"] == "Completed", details["error"]
    assert "context azureml.core.run _SubmittedRun" in log
    assert "network unreachable" in log  # its only way out is the relay to its endpoint
    assert handle.get_metrics() == {"Accuracy": [0.98], "losses": [[0.5, 0.25]]}
    assert details["tags"] == {"where": "container"}
    through_sdk = Run(Experiment(amlocal.emulator.workspace(), "inrun"), handle.id)
    assert through_sdk.get_metrics() == {"Accuracy": 0.98, "losses": [0.5, 0.25]}


# A PNG without matplotlib (the image has none): a plot is anything with savefig, to azureml-core.
DOCKER_UPLOAD_SCRIPT = UPLOAD_SCRIPT.replace('''import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
''', '''import struct, zlib


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


PNG = (b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
       + chunk(b"IDAT", zlib.compress(b"\\x00\\x00")) + chunk(b"IEND", b""))


class Figure:
    def plot(self, *points):
        pass

    def savefig(self, target, format="png"):
        if isinstance(target, str):
            target = open(target, "wb")
        target.write(PNG)


plt = Figure()
''')


@pytest.mark.docker
def test_a_docker_run_uploads_files_and_images_through_the_sdk(emulator, docker_client, tmp_path):
    assert "import matplotlib" not in DOCKER_UPLOAD_SCRIPT
    source = write_script(tmp_path / "src", "train.py", DOCKER_UPLOAD_SCRIPT)

    handle, details = docker_submit(emulator.home, source, "azureml-core")

    check_uploads(emulator, handle, details, tmp_path)
    assert "HTTPS_PROXY set: True" in driver_log(handle)  # a container reaches nothing else


@pytest.mark.docker
def test_a_docker_run_cannot_write_another_runs_files_nor_reach_the_world(emulator, docker_client,
                                                                          logged, tmp_path):
    other, _ = logged
    before = file_bytes(other)
    source = write_script(tmp_path / "src", "train.py", FORGING_SCRIPT)

    handle, details = docker_submit(emulator.home, source, "azureml-core",
                                    environment_variables={"OTHER_RUN": other.id})

    log = driver_log(handle)
    assert details["status"] == "Completed", (details["error"], log)
    assert "sas for own 200" in log and "sas for other 403" in log, log
    assert "reused 403" in log and "forged 403" in log and "datastore 403" in log, log
    assert "world refused True" in log, log
    assert file_bytes(other) == before
