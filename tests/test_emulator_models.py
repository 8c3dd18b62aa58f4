"""Model management through the emulator, with the real azureml-core 1.61 as the only client:
`run.register_model` for runs the local backend ran (the process executor: fast, no Docker),
`Model(ws, ...)`, `Model.list`, tag and property changes, `download` and `delete`, Azure's rules
and error bodies, and one registry with `amlocal models`."""

import hashlib
import json
import os
import subprocess
import sys

import pytest
import requests

from conftest import emulator_environment, write_script

pytest.importorskip("azureml.core", reason="the azure extra (CI installs it)")

from azureml.core import Experiment, Run  # noqa: E402
from azureml.core.model import Model  # noqa: E402
from azureml.exceptions import ModelPathNotFoundException, WebserviceException  # noqa: E402

import amlocal.emulator  # noqa: E402
from amlocal.backends.base import RunSpec  # noqa: E402
from amlocal.backends.history.models import ModelRegistry  # noqa: E402
from amlocal.backends.history.store import RunStore  # noqa: E402
from amlocal.backends.local import LocalBackend  # noqa: E402
from amlocal.service.tokens import RUN_SCOPE, TokenIssuer  # noqa: E402

WS_PATH = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/amlocal/providers"
           "/Microsoft.MachineLearningServices/workspaces/local")
MMS = "/modelmanagement/v1.0" + WS_PATH
MIME = "application/json"

# Bytes that no text-mode copy, newline translation or re-encoding leaves alone.
MODEL_BYTES = bytes(range(256)) * 64 + b"\r\n\x00\xff"

SCRIPT = """\
import os
os.makedirs("outputs/weights/deep", exist_ok=True)
with open("outputs/model.npz", "wb") as out:
    out.write(bytes(range(256)) * 64 + b"\\r\\n\\x00\\xff")
with open("outputs/weights/a.txt", "w") as out:
    out.write("layer a")
with open("outputs/weights/deep/b.bin", "wb") as out:
    out.write(b"\\x00\\x01\\x02")
"""


@pytest.fixture(scope="module")
def run_id(emulator, tmp_path_factory):
    """A Completed run of SCRIPT in experiment `models`, run by the local backend."""
    source = write_script(tmp_path_factory.mktemp("src"), "train.py", SCRIPT)
    handle = LocalBackend(emulator.home).submit(RunSpec(
        source_dir=source, script="train.py", experiment="models", executor="process"))
    assert handle.wait()["status"] == "Completed"
    return handle.id


def workspace():
    return amlocal.emulator.workspace()


def the_run(run_id):
    return Run(Experiment(workspace(), "models"), run_id)


def headers():
    return amlocal.emulator.auth().get_authentication_header()


def registry(emulator):
    return ModelRegistry(RunStore(emulator.home))


def cli(emulator, *args):
    """`amlocal ...` over the emulator's run history, as a user would type it."""
    return subprocess.run(
        [sys.executable, "-c", "from amlocal.cli.main import main; main()", *args],
        env=emulator_environment(emulator.home, os.environ["HOME"]), capture_output=True,
        text=True, timeout=120)


def tree(folder):
    """{relative posix path: SHA-256} of every file under folder."""
    return {os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/"):
            hashlib.sha256(open(os.path.join(root, name), "rb").read()).hexdigest()
            for root, _dirs, names in os.walk(folder) for name in names}


# -- run.register_model -----------------------------------------------------------------------

def test_register_model_from_a_run_is_recorded_with_its_run_and_downloads_byte_exact(
        emulator, run_id, tmp_path):
    model = the_run(run_id).register_model(
        "mnist-mlp", model_path="outputs/model.npz", tags={"area": "vision", "epochs": "2"},
        properties={"accuracy": "0.91"}, description="the seed's MLP")

    assert (model.name, model.version, model.id) == ("mnist-mlp", 1, "mnist-mlp:1")
    assert model.run_id == run_id and model.experiment_name == "models"
    assert model.tags == {"area": "vision", "epochs": "2"}
    assert model.properties == {"accuracy": "0.91"}
    assert model.description == "the seed's MLP"
    assert model.run is not None and model.run.id == run_id  # the SDK read the run back
    path = Model(workspace(), "mnist-mlp").download(str(tmp_path / "got"))
    assert path == str(tmp_path / "got" / "model.npz")
    assert open(path, "rb").read() == MODEL_BYTES
    log = emulator.request_log()
    assert f"POST {MMS}/assets 200" in log and f"POST {MMS}/models 200" in log
    # The emulator's registry is amlocal's: `amlocal models` sees the model and its run.
    listed = cli(emulator, "models", "list", "--name", "mnist-mlp", "--json")
    assert listed.returncode == 0, listed.stderr
    (record,) = json.loads(listed.stdout)
    assert (record["version"], record["run_id"], record["tags"]) == (1, run_id, model.tags)


def test_a_folder_registered_from_a_run_downloads_as_that_folder(emulator, run_id, tmp_path):
    model = the_run(run_id).register_model("weights", model_path="outputs/weights")

    path = model.download(str(tmp_path))

    assert path == str(tmp_path / "weights")
    assert tree(tmp_path) == {"weights/a.txt": hashlib.sha256(b"layer a").hexdigest(),
                              "weights/deep/b.bin": hashlib.sha256(b"\0\1\2").hexdigest()}


def test_registering_a_name_again_gives_the_next_version(emulator, run_id):
    first = the_run(run_id).register_model("again", model_path="outputs/model.npz")
    second = the_run(run_id).register_model("again", model_path="outputs/weights/a.txt")

    assert (first.version, second.version) == (1, 2)
    assert Model(workspace(), "again").version == 2  # the name alone is its latest version
    assert Model(workspace(), "again", version=1).url == first.url


def test_a_model_path_that_the_run_does_not_have_is_the_sdks_error(emulator, run_id):
    with pytest.raises(ModelPathNotFoundException, match="Could not locate the provided "
                       "model_path outputs/missing.npz in the set of files uploaded to the run"):
        the_run(run_id).register_model("nowhere", model_path="outputs/missing.npz")

    assert registry(emulator).list(name="nowhere") == []


# -- reading models ---------------------------------------------------------------------------

def test_a_model_is_found_by_name_by_name_and_version_and_by_id(emulator, run_id):
    registered = the_run(run_id).register_model("lookup", model_path="outputs/model.npz",
                                                tags={"kind": "mlp"})

    by_name = Model(workspace(), "lookup")
    by_version = Model(workspace(), "lookup", version=registered.version)
    by_id = Model(workspace(), id=registered.id)

    for found in (by_name, by_version, by_id):
        assert (found.name, found.version, found.tags) == ("lookup", registered.version,
                                                           {"kind": "mlp"})
        assert found.run_id == run_id and found.created_time is not None


def test_a_missing_model_is_azures_404_and_the_sdks_model_not_found(emulator, run_id):
    the_run(run_id).register_model("present", model_path="outputs/model.npz")

    with pytest.raises(WebserviceException, match="ModelNotFound: Model with name absent"):
        Model(workspace(), "absent")
    with pytest.raises(WebserviceException, match="ModelNotFound: Model with id present:9"):
        Model(workspace(), "present", version=9)
    with pytest.raises(WebserviceException, match="ModelNotFound: Model with id absent:1"):
        Model(workspace(), id="absent:1")
    answer = requests.get(f"{emulator.endpoint}{MMS}/models/present:9", headers=headers(),
                          timeout=10)
    assert answer.status_code == 404
    body = answer.json()  # Model Management's own shape (ModelErrorResponse), not ARM's
    assert body["statusCode"] == 404 and body["code"] == "NotFound"
    assert body["details"][0]["code"] == "ModelNotFound"
    assert "present" in body["details"][0]["message"]


def test_model_list_filters_as_on_azure(emulator, run_id):
    run = the_run(run_id)
    run.register_model("listed-a", model_path="outputs/model.npz",
                       tags={"team": "vision", "stage": "dev"}, properties={"data": "mnist"})
    run.register_model("listed-a", model_path="outputs/model.npz",
                       tags={"team": "vision", "stage": "prod"})
    run.register_model("listed-b", model_path="outputs/model.npz", tags={"team": "speech"})

    def ids(**filters):
        return sorted(model.id for model in Model.list(workspace(), **filters)
                      if model.name.startswith("listed-"))

    assert ids(name="listed-a") == ["listed-a:1", "listed-a:2"]
    assert ids(name="listed-a", latest=True) == ["listed-a:2"]
    assert ids(tags=["team"]) == ["listed-a:1", "listed-a:2", "listed-b:1"]
    assert ids(tags=[["team", "vision"], ["stage", "prod"]]) == ["listed-a:2"]
    assert ids(properties=[["data", "mnist"]]) == ["listed-a:1"]
    assert ids(run_id=run_id, latest=True) == ["listed-a:2", "listed-b:1"]
    assert ids(run_id="models_1_00000000") == []


def test_model_list_pages_through_many_models(emulator, run_id):
    for _ in range(25):
        registry(emulator).register_from_run(run_id, "paged", "outputs/weights/a.txt")

    listed = Model.list(workspace(), name="paged", page_count=20)

    assert sorted(model.version for model in listed) == list(range(1, 26))
    assert f"GET {MMS}/models 200" in emulator.request_log()


# -- changing and deleting --------------------------------------------------------------------

def test_tags_properties_and_description_change_through_the_sdk(emulator, run_id):
    model = the_run(run_id).register_model("changing", model_path="outputs/model.npz",
                                           tags={"a": "1", "b": "2"}, properties={"p": "1"})

    model.add_tags({"c": "3"})
    model.remove_tags(["a"])
    model.add_properties({"q": "2"})
    again = Model(workspace(), id=model.id)
    assert again.tags == {"b": "2", "c": "3"}
    assert again.properties == {"p": "1", "q": "2"}

    again.update(tags={"only": "this"}, description="new words")
    final = Model(workspace(), id=model.id)
    assert final.tags == {"only": "this"} and final.description == "new words"
    assert registry(emulator).get("changing", 1)["tags"] == {"only": "this"}


def test_a_property_cannot_change_its_value(emulator, run_id):
    model = the_run(run_id).register_model("fixed", model_path="outputs/model.npz",
                                           properties={"p": "1"})
    patch = [{"op": "add", "path": "/properties", "value": {"p": "2"}}]

    answer = requests.patch(f"{emulator.endpoint}{MMS}/models/{model.id}", json=patch,
                            headers=headers(), timeout=10)

    assert answer.status_code == 400 and answer.json()["statusCode"] == 400
    assert "immutable" in answer.json()["message"]
    assert Model(workspace(), id=model.id).properties == {"p": "1"}


def test_delete_removes_the_model_and_its_files(emulator, run_id):
    model = the_run(run_id).register_model("doomed", model_path="outputs/model.npz")
    folder = registry(emulator).model_dir("doomed", 1)
    assert folder.exists()

    model.delete()

    with pytest.raises(WebserviceException, match="ModelNotFound"):
        Model(workspace(), id="doomed:1")
    assert not folder.exists()
    assert registry(emulator).list(name="doomed") == []
    with pytest.raises(WebserviceException, match="ModelNotFound"):
        model.delete()


# -- one registry -----------------------------------------------------------------------------

def test_a_model_registered_with_amlocal_models_register_is_served_to_the_sdk(emulator, tmp_path):
    local = tmp_path / "clf"
    (local / "nested").mkdir(parents=True)
    (local / "model.pkl").write_bytes(MODEL_BYTES)
    (local / "nested" / "vocab.txt").write_text("a\nb\n")
    registered = cli(emulator, "models", "register", "--name", "from-cli", "--from-path", str(local),
                     "--tag", "origin=cli")
    assert registered.returncode == 0, registered.stderr

    model = Model(workspace(), "from-cli")
    path = model.download(str(tmp_path / "got"))

    assert (model.version, model.tags, model.run_id) == (1, {"origin": "cli"}, None)
    assert path == str(tmp_path / "got" / "clf")
    assert tree(tmp_path / "got" / "clf") == tree(local)


def test_download_honours_exist_ok(emulator, run_id, tmp_path):
    model = the_run(run_id).register_model("twice", model_path="outputs/model.npz")
    model.download(str(tmp_path))

    with pytest.raises(WebserviceException, match="File already exists"):
        model.download(str(tmp_path))
    assert model.download(str(tmp_path), exist_ok=True) == str(tmp_path / "model.npz")
    assert (tmp_path / "model.npz").read_bytes() == MODEL_BYTES


def test_a_damaged_registry_copy_is_not_served(emulator, run_id):
    """Reported, never served (the SDK would retry the download for minutes: asked directly)."""
    the_run(run_id).register_model("damaged", model_path="outputs/model.npz")
    listing = _model_files(emulator, "damaged:1")
    copy = registry(emulator).model_dir("damaged", 1) / "model.npz"
    copy.chmod(0o644)
    copy.write_bytes(b"not the model")

    answer = requests.get(listing[0]["contentUri"], timeout=10)

    assert answer.status_code == 500 and b"not the model" not in answer.content
    assert "damaged" in answer.json()["message"]


# -- Azure's rules ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["-starts-with-a-dash", "has space", "x" * 256, ""])
def test_a_name_that_breaks_azures_rule_is_refused_by_the_service_too(emulator, run_id, name):
    """The SDK checks the rule before it sends; the service checks it again for other clients."""
    with pytest.raises(WebserviceException, match="provided model name is invalid"):
        the_run(run_id).register_model(name, model_path="outputs/model.npz")
    asset = requests.post(f"{emulator.endpoint}{MMS}/assets", headers=headers(), timeout=10, json={
        "name": "fine", "runid": run_id,
        "artifacts": [{"prefix": f"ExperimentRun/dcid.{run_id}/outputs/model.npz"}]}).json()

    answer = requests.post(f"{emulator.endpoint}{MMS}/models", headers=headers(), timeout=10,
                           json={"name": name, "url": f"aml://asset/{asset['id']}",
                                 "mimeType": MIME})

    assert answer.status_code == 400 and answer.json()["statusCode"] == 400
    assert "letters, numbers, dashes, periods, or underscores" in answer.json()["message"]
    if name:
        assert registry(emulator).list(name=name) == []


def test_a_model_url_that_is_no_asset_of_this_workspace_is_refused(emulator):
    for url in ("aml://asset/0123456789abcdef0123456789abcdef", "https://example.com/m.pkl"):
        answer = requests.post(f"{emulator.endpoint}{MMS}/models", headers=headers(), timeout=10,
                               json={"name": "stray", "url": url, "mimeType": MIME})
        assert answer.status_code in (400, 404), answer.text
        assert answer.json()["statusCode"] == answer.status_code
    assert registry(emulator).list(name="stray") == []


def test_a_download_url_reads_only_its_own_model(emulator, run_id):
    the_run(run_id).register_model("signed-a", model_path="outputs/model.npz")
    the_run(run_id).register_model("signed-b", model_path="outputs/weights/a.txt")
    (entry,) = _model_files(emulator, "signed-a:1")
    signature = entry["contentUri"].split("?sig=", 1)[1]

    mine = requests.get(entry["contentUri"], timeout=10)
    other = requests.get(entry["contentUri"].replace("signed-a/1/model.npz", "signed-b/1/a.txt"),
                         timeout=10)
    forged = requests.get(entry["contentUri"].replace(signature, signature[:-2] + "xx"),
                          timeout=10)

    assert mine.status_code == 200 and mine.content == MODEL_BYTES
    assert other.status_code == forged.status_code == 403


def _model_files(emulator, model_id):
    """The content information of a model's files, asked as azureml-core's download asks."""
    asset = requests.get(f"{emulator.endpoint}{MMS}/assets/{model_id}", headers=headers(),
                         timeout=10).json()
    (artifact,) = asset["artifacts"]
    return requests.get(f"{emulator.endpoint}/artifact/v2.0{WS_PATH}/artifacts/prefix/"
                        f"contentinfo/{artifact['prefix']}", headers=headers(),
                        timeout=10).json()["value"]


# -- Model.register: local files, uploaded through the blob route -----------------------------

@pytest.fixture
def uploading_workspace(emulator, monkeypatch, tmp_path):
    """A workspace whose blob uploads go through the emulator's https route (blobs.py), in a
    working folder of its own (Model.register takes only paths under the working folder)."""
    for variable in ("HTTPS_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.chdir(tmp_path)
    yield workspace()  # sets this process's environment for the https route
    for variable in ("HTTPS_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE"):
        os.environ.pop(variable, None)


def test_model_register_uploads_a_local_file_and_it_downloads_byte_exact(
        emulator, uploading_workspace, tmp_path):
    (tmp_path / "model.pkl").write_bytes(MODEL_BYTES)

    model = Model.register(uploading_workspace, model_path="model.pkl", model_name="local-file",
                           tags={"source": "laptop"}, properties={"f1": "0.8"},
                           description="a pickled model")
    path = Model(uploading_workspace, "local-file").download(str(tmp_path / "got"))

    assert (model.id, model.tags, model.properties) == ("local-file:1", {"source": "laptop"},
                                                        {"f1": "0.8"})
    assert model.description == "a pickled model" and model.run_id is None
    assert open(path, "rb").read() == MODEL_BYTES
    assert registry(emulator).get("local-file")["files"][0]["path"] == "model.pkl"


def test_model_register_of_a_folder_with_child_paths_keeps_only_those(
        emulator, uploading_workspace, tmp_path):
    local = tmp_path / "clf"
    (local / "keep").mkdir(parents=True)
    (local / "keep" / "w.bin").write_bytes(MODEL_BYTES)
    (local / "top.txt").write_text("top")
    (local / "skip.txt").write_text("skip")

    model = Model.register(uploading_workspace, model_path="clf", model_name="local-folder",
                           child_paths=["keep", "top.txt"])
    path = model.download(str(tmp_path / "got"))

    assert path == str(tmp_path / "got" / "clf")
    assert tree(tmp_path / "got") == {"clf/keep/w.bin": hashlib.sha256(MODEL_BYTES).hexdigest(),
                                      "clf/top.txt": hashlib.sha256(b"top").hexdigest()}
    listed = cli(emulator, "models", "list", "--name", "local-folder", "--json")
    assert json.loads(listed.stdout)[0]["size_bytes"] == len(MODEL_BYTES) + 3


def test_a_model_of_an_upload_that_never_arrived_is_refused(emulator, uploading_workspace):
    asset = requests.post(f"{emulator.endpoint}{MMS}/assets", headers=headers(), timeout=10, json={
        "name": "ghost", "artifacts": [{"prefix": "LocalUpload/261201T000000-deadbeef/m.pkl"}]})

    answer = requests.post(f"{emulator.endpoint}{MMS}/models", headers=headers(), timeout=10,
                           json={"name": "ghost", "url": f"aml://asset/{asset.json()['id']}",
                                 "mimeType": MIME})

    assert answer.status_code == 400 and "no files were uploaded" in answer.json()["message"]
    assert registry(emulator).list(name="ghost") == []


@pytest.mark.parametrize("prefix, status", [
    ("LocalUpload/../m.pkl", 400), ("LocalUpload/a b/m.pkl", 400), ("Elsewhere/c/m.pkl", 501),
    ("ExperimentRun/dcid.a$b/m.pkl", 501), ("no-parts", 400)])
def test_an_asset_of_files_the_emulator_cannot_hold_is_refused(emulator, prefix, status):
    answer = requests.post(f"{emulator.endpoint}{MMS}/assets", headers=headers(), timeout=10,
                           json={"name": "odd", "artifacts": [{"prefix": prefix}]})

    assert answer.status_code == status and answer.json()["statusCode"] == status


@pytest.mark.parametrize("path", ["../escape.pkl", "/abs.pkl", "a/./b", ""])
def test_an_upload_path_that_could_leave_its_container_is_refused(emulator, path):
    answer = requests.post(
        f"{emulator.endpoint}/artifact/v2.0{WS_PATH}/artifacts/batch/metadata/LocalUpload/"
        "261201T000000-deadbeef", headers=headers(), timeout=10, json={"paths": [{"path": path}]})

    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "UserError"


# -- inside a run: the script's own run.register_model, with its run token --------------------

INRUN_SCRIPT = """\
from azureml.core.run import Run
run = Run.get_context()
model = run.register_model("from-inside", model_path="outputs/model.npz", tags={"by": "script"})
print(type(run).__name__, model.id, model.run_id)
"""


def _in_run_environment(emulator, run_id, token):
    """What a run's driver gives its script for the SDK's live run (the in-run part of issue
    12): the workspace, the run, the emulator's endpoint and a token for that run only."""
    return {**emulator_environment(emulator.home, os.environ["HOME"]),
            "AZUREML_ARM_SUBSCRIPTION": "00000000-0000-0000-0000-000000000000",
            "AZUREML_ARM_RESOURCEGROUP": "amlocal", "AZUREML_ARM_WORKSPACE_NAME": "local",
            "AZUREML_ARM_PROJECT_NAME": "models", "AZUREML_RUN_ID": run_id,
            "AZUREML_SERVICE_ENDPOINT": emulator.endpoint,
            "AZUREML_DISCOVERY_SERVICE_ENDPOINT": f"{emulator.endpoint}/discovery",
            "AZUREML_RUN_TOKEN": token}


def run_token(emulator, run_id):
    return TokenIssuer(emulator.home / "emulator" / "token-secret").issue(RUN_SCOPE + run_id)


def test_a_script_registers_a_model_of_its_own_run_with_its_run_token(emulator, run_id, tmp_path):
    script = tmp_path / "inside.py"
    script.write_text(INRUN_SCRIPT)

    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path,
                          env=_in_run_environment(emulator, run_id, run_token(emulator, run_id)))

    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["_SubmittedRun", "from-inside:1", run_id]
    assert registry(emulator).get("from-inside", 1)["tags"] == {"by": "script"}


def test_a_run_token_registers_models_of_its_own_run_only(emulator, run_id, tmp_path):
    source = write_script(tmp_path / "src", "train.py", SCRIPT)
    other = LocalBackend(emulator.home).submit(RunSpec(
        source_dir=source, script="train.py", experiment="models", executor="process"))
    assert other.wait()["status"] == "Completed"
    token = {"Authorization": f"Bearer {run_token(emulator, run_id)}"}
    stolen = requests.post(f"{emulator.endpoint}{MMS}/assets", headers=token, timeout=10, json={
        "name": "stolen", "artifacts": [{"prefix": f"ExperimentRun/dcid.{other.id}/outputs"}]})
    theirs = requests.post(f"{emulator.endpoint}{MMS}/assets", headers=headers(), timeout=10,
                           json={"name": "theirs", "artifacts": [
                               {"prefix": f"ExperimentRun/dcid.{other.id}/outputs"}]}).json()
    via_their_asset = requests.post(
        f"{emulator.endpoint}{MMS}/models", headers=token, timeout=10,
        json={"name": "stolen", "url": f"aml://asset/{theirs['id']}", "mimeType": MIME})
    listing = requests.get(f"{emulator.endpoint}{MMS}/models", headers=token, timeout=10)

    assert stolen.status_code == via_their_asset.status_code == listing.status_code == 403
    assert stolen.json()["statusCode"] == 403
    assert registry(emulator).list(name="stolen") == []


def test_a_damaged_asset_is_reported_not_used(emulator, run_id):
    asset = requests.post(f"{emulator.endpoint}{MMS}/assets", headers=headers(), timeout=10, json={
        "name": "torn", "artifacts": [{"prefix": f"ExperimentRun/dcid.{run_id}/outputs"}]}).json()
    (emulator.home / "emulator" / "assets" / f"{asset['id']}.json").write_text('{"id": ')

    answer = requests.post(f"{emulator.endpoint}{MMS}/models", headers=headers(), timeout=10,
                           json={"name": "torn", "url": f"aml://asset/{asset['id']}",
                                 "mimeType": MIME})

    assert answer.status_code == 500 and "is damaged" in answer.json()["message"]
    assert registry(emulator).list(name="torn") == []
