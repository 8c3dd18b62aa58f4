"""The model registry (backends/history/models.py), its SDK face (amlocal.model) and `amlocal models`.

Everything runs against a real run history in a fresh AMLOCAL_HOME: runs are made with
RunStore.create_run plus files written into their outputs (PostProcessing's record_files then
notes them, as a run's end does), or by a real run through the process executor.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from amlocal.backends.history.models import (ModelNotFoundError, ModelPathNotFoundError,
                                           ModelRegistry)
from amlocal.backends.history.store import RunStore
from amlocal.backends.registries import HistoryModelRegistry
from amlocal.cli.main import cli
from amlocal.errors import RunNotFoundError, RunRecordCorruptedError, UserInputError
from amlocal.model import (Model, ModelNotFoundException, ModelPathNotFoundException,
                           UserErrorException, WebserviceException, register_model_from_run)
from amlocal.workspace import Workspace
from conftest import write_script

MODEL_BYTES = b"\x93NUMPY weights " + bytes(range(256)) * 4
RUN_SPEC = {"script": "train.py", "arguments": [], "source_dir": "src", "inputs": {},
            "environment": {"recipe": "chainer", "pip_packages": [], "base_image": None},
            "tags": {}}


@pytest.fixture
def store(amlocal_home):
    return RunStore()


@pytest.fixture
def registry(store):
    return HistoryModelRegistry(store)


def new_run(store, files=None, experiment="mnist"):
    """A run whose outputs hold `files` ({name under the run: bytes}), recorded as PostProcessing
    records them."""
    def fill_snapshot(folder):
        folder.mkdir()
        (folder / "train.py").write_text("print('training')\n")

    run_id = store.create_run(experiment=experiment, executor="process", compute="local",
                              spec=RUN_SPEC, fill_snapshot=fill_snapshot)
    for status in ("Preparing", "Queued", "Running", "Finalizing"):
        store.set_status(run_id, status)
    for name, data in (files if files is not None else {"outputs/model.npz": MODEL_BYTES}).items():
        path = store.run_dir(run_id) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    store.record_files(run_id)
    store.set_status(run_id, "Completed")
    return run_id


def invoke(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args], catch_exceptions=False)


def last_json(result):
    return json.loads(result.stdout.strip().splitlines()[-1])


def tree(folder):
    """{posix path: bytes} of every file under folder."""
    folder = Path(folder)
    return {path.relative_to(folder).as_posix(): path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file()}


# -- registering from runs ------------------------------------------------------------------------

def test_registering_a_run_file_three_times_gives_versions_1_2_3(store, registry, amlocal_home):
    run_id = new_run(store)

    records = [registry.register_from_run(run_id, "mnist-mlp", "outputs/model.npz")
               for _ in range(3)]

    assert [record["version"] for record in records] == [1, 2, 3]
    assert [record["id"] for record in records] == ["mnist-mlp:1", "mnist-mlp:2", "mnist-mlp:3"]
    for record in records:
        folder = amlocal_home / "models" / "mnist-mlp" / str(record["version"])
        assert tree(folder) == {"model.npz": MODEL_BYTES}
        assert record["path"] == str(folder / "model.npz")
        assert record["run_id"] == run_id and record["run_path"] == "outputs/model.npz"
        assert record["experiment_name"] == "mnist" and record["model_path"] == "model.npz"
        assert record["framework"] == "Custom" and record["size_bytes"] == len(MODEL_BYTES)
    assert registry.get("mnist-mlp")["version"] == 3
    assert registry.get("mnist-mlp", 2)["id"] == "mnist-mlp:2"
    assert [r["version"] for r in registry.list(name="mnist-mlp")] == [3, 2, 1]


def test_registering_a_run_folder_keeps_its_files_under_the_folder_name(store, registry, tmp_path):
    run_id = new_run(store, {"outputs/model.npz": MODEL_BYTES, "outputs/vocab/words.txt": b"a b\n",
                             "logs/train.log": b"epoch 1\n"})

    record = registry.register_from_run(run_id, "bundle", "outputs/", tags={"kind": "folder"})
    path = registry.download("bundle", None, tmp_path / "down")

    assert record["model_path"] == "outputs" and record["run_path"] == "outputs"
    assert [entry["path"] for entry in record["files"]] == ["outputs/model.npz",
                                                            "outputs/vocab/words.txt"]
    assert path == tmp_path / "down" / "outputs"
    assert tree(tmp_path / "down") == {"outputs/model.npz": MODEL_BYTES,
                                       "outputs/vocab/words.txt": b"a b\n"}


def test_a_subfolder_of_a_run_keeps_only_its_last_part(store, registry):
    run_id = new_run(store, {"outputs/export/a.bin": b"a", "outputs/export/b/c.bin": b"c"})

    record = registry.register_from_run(run_id, "export", "outputs/export")

    assert [entry["path"] for entry in record["files"]] == ["export/a.bin", "export/b/c.bin"]


def test_model_path_defaults_to_the_model_name(store, registry):
    run_id = new_run(store, {"outputs/model.npz": MODEL_BYTES})

    record = registry.register_from_run(run_id, "outputs")

    assert record["run_path"] == "outputs" and record["model_path"] == "outputs"


@pytest.mark.parametrize("model_path", ["outputs/x", "outputs/model", "outputs/mod", "model.npz",
                                        "snapshot/train.py", "../outputs/model.npz", "."])
def test_a_path_that_is_not_among_the_run_files_is_refused_as_azureml_does(store, registry,
                                                                            amlocal_home,
                                                                            model_path):
    run_id = new_run(store, {"outputs/model.npz": MODEL_BYTES, "logs/train.log": b"x"})

    with pytest.raises(ModelPathNotFoundError) as raised:
        registry.register_from_run(run_id, "m", model_path)

    assert str(raised.value) == (
        f"Could not locate the provided model_path {os.path.normpath(model_path)} in the set of "
        "files uploaded to the run: ['logs/train.log', 'outputs/model.npz'] "
        "See https://aka.ms/run-logging for more details.")
    assert registry.list() == []
    assert not (amlocal_home / "models" / "m").exists()


def test_a_run_file_damaged_after_post_processing_is_refused(store, registry, amlocal_home):
    run_id = new_run(store)
    model_file = store.run_dir(run_id) / "outputs" / "model.npz"
    data = bytearray(model_file.read_bytes())
    data[100] ^= 0xFF
    model_file.write_bytes(bytes(data))

    with pytest.raises(RunRecordCorruptedError, match="outputs/model.npz is damaged"):
        registry.register_from_run(run_id, "m", "outputs/model.npz")

    assert registry.list() == [] and not (amlocal_home / "models" / "m").exists()


def test_an_unknown_run_is_refused(registry):
    with pytest.raises(RunNotFoundError, match="no run with id 'exp_1_deadbeef'"):
        registry.register_from_run("exp_1_deadbeef", "m", "outputs/model.npz")


# -- registering local files ----------------------------------------------------------------------

def test_registering_a_local_file_and_a_local_folder(registry, tmp_path):
    (tmp_path / "model.pkl").write_bytes(b"pickle")
    folder = tmp_path / "saved_model"
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"graph")
    (folder / "variables" / "data").write_bytes(b"weights")

    single = registry.register("sk", tmp_path / "model.pkl", description="ridge")
    whole = registry.register("tf", str(folder), framework="TensorFlow", framework_version="2.15")

    assert single["model_path"] == "model.pkl" and single["run_id"] is None
    assert single["description"] == "ridge"
    assert tree(Path(single["path"]).parent) == {"model.pkl": b"pickle"}
    assert whole["model_path"] == "saved_model"
    assert tree(Path(whole["path"]).parent) == {"saved_model/saved_model.pb": b"graph",
                                                "saved_model/variables/data": b"weights"}
    assert (whole["framework"], whole["framework_version"]) == ("TensorFlow", "2.15")


def test_a_failed_registration_leaves_nothing_and_uses_no_version(registry, amlocal_home,
                                                                   tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "good.bin").write_bytes(b"good")
    (folder / "dangling").symlink_to(tmp_path / "nowhere")

    with pytest.raises(UserInputError, match="cannot read .*dangling"):
        registry.register("m", folder)
    with pytest.raises(RunNotFoundError):
        registry.register("m", tmp_path / "model" / "good.bin", run_id="exp_1_deadbeef")

    assert registry.list() == []
    assert list((amlocal_home / "models" / ".staging").iterdir()) == []
    assert not (amlocal_home / "models" / "m").exists()
    assert registry.register("m", folder / "good.bin")["version"] == 1


@pytest.mark.parametrize("name,valid", [
    ("mnist", True), ("A.b-c_d9", True), ("9lives", True), ("x" * 255, True),
    ("x" * 256, False), ("", False), ("-lead", False), ("_lead", False), (".hidden", False),
    ("has space", False), ("a/b", False), ("a:b", False), ("ü", False)])
def test_model_names_follow_azures_rule(registry, tmp_path, name, valid):
    source = tmp_path / "m.bin"
    source.write_bytes(b"m")

    if valid:
        assert registry.register(name, source)["name"] == name
    else:
        with pytest.raises(UserInputError, match="It must only consist of letters, numbers"):
            registry.register(name, source)
        assert registry.list() == []


def test_framework_version_needs_a_framework(registry, tmp_path):
    (tmp_path / "m.bin").write_bytes(b"m")

    with pytest.raises(UserInputError, match="framework version cannot be provided without"):
        registry.register("m", tmp_path / "m.bin", framework_version="1.0")


# -- finding --------------------------------------------------------------------------------------

@pytest.fixture
def catalog(registry, tmp_path):
    source = tmp_path / "m.bin"
    source.write_bytes(b"m")
    registry.register("cnn", source, tags={"area": "vision", "stage": "dev"})
    registry.register("cnn", source, tags={"area": "vision", "stage": "prod"},
                      properties={"accuracy": "0.97"})
    registry.register("rnn", source, tags={"area": "text"})
    registry.register("cnn", source, tags={"area": "vision"}, framework="PyTorch")
    return registry


@pytest.mark.parametrize("filters,expected", [
    ({}, ["cnn:3", "rnn:1", "cnn:2", "cnn:1"]),
    ({"name": "cnn"}, ["cnn:3", "cnn:2", "cnn:1"]),
    ({"tags": ["stage"]}, ["cnn:2", "cnn:1"]),
    ({"tags": [["stage", "prod"]]}, ["cnn:2"]),
    ({"tags": [("area", "vision"), "stage"]}, ["cnn:2", "cnn:1"]),
    ({"tags": [["area", "text"], "stage"]}, []),
    ({"tags": [["area", "vision"]], "latest": True}, ["cnn:3"]),
    ({"tags": ["stage"], "latest": True}, ["cnn:2"]),
    ({"latest": True}, ["cnn:3", "rnn:1"]),
    ({"properties": [["accuracy", "0.97"]]}, ["cnn:2"]),
    ({"properties": ["accuracy"], "name": "rnn"}, []),
    ({"framework": "PyTorch"}, ["cnn:3"]),
])
def test_list_filters_as_azureml(catalog, filters, expected):
    assert [record["id"] for record in catalog.list(**filters)] == expected


def test_list_refuses_tags_that_are_not_a_list(catalog):
    with pytest.raises(UserInputError, match="Expected tags must be list type"):
        catalog.list(tags={"stage": "prod"})


def test_unknown_models_and_versions(catalog):
    with pytest.raises(ModelNotFoundError, match="no model named 'nope'"):
        catalog.get("nope")
    with pytest.raises(ModelNotFoundError, match=r"'cnn' has no version 9 \(its versions: 1, 2, 3\)"):
        catalog.get("cnn", 9)


# -- downloading ----------------------------------------------------------------------------------

def test_download_gives_the_run_file_and_honours_exist_ok(store, registry, tmp_path):
    run_id = new_run(store)
    registry.register_from_run(run_id, "m", "outputs/model.npz")
    target = tmp_path / "down"

    path = registry.download("m", 1, target)

    assert path == target / "model.npz"
    assert path.read_bytes() == (store.run_dir(run_id) / "outputs" / "model.npz").read_bytes()
    path.write_bytes(b"changed locally")
    with pytest.raises(UserInputError) as raised:
        registry.download("m", 1, target)
    assert str(raised.value) == f"File already exists. To overwrite, set exist_ok to True. {path}"
    assert path.read_bytes() == b"changed locally"
    assert registry.download("m", 1, target, exist_ok=True) == path
    assert path.read_bytes() == MODEL_BYTES
    assert sorted(p.name for p in target.iterdir()) == ["model.npz"]  # no partial files left


def test_download_into_a_folder_with_other_files_is_fine(registry, tmp_path):
    (tmp_path / "m.bin").write_bytes(b"m")
    registry.register("m", tmp_path / "m.bin")
    target = tmp_path / "down"
    target.mkdir()
    (target / "other.txt").write_text("mine")

    assert registry.download("m", None, target).read_bytes() == b"m"
    assert (target / "other.txt").read_text() == "mine"


def test_a_damaged_registry_copy_is_never_served(registry, amlocal_home, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"a" * 100)
    (folder / "b.bin").write_bytes(b"b" * 100)
    registry.register("m", folder)
    copy = amlocal_home / "models" / "m" / "1" / "model" / "b.bin"
    copy.chmod(0o644)
    copy.write_bytes(b"b" * 99 + b"X")

    with pytest.raises(RunRecordCorruptedError, match="model m:1's files in the registry are "
                                                      "damaged: model/b.bin"):
        registry.download("m", 1, tmp_path / "down")
    with pytest.raises(RunRecordCorruptedError):
        registry.verified_path("m")
    assert not (tmp_path / "down").exists()  # not even a.bin: nothing of a damaged model
    copy.unlink()
    with pytest.raises(RunRecordCorruptedError, match="model/b.bin is missing"):
        registry.download("m", 1, tmp_path / "down")


def test_open_file_serves_one_checked_file_of_a_model(registry, amlocal_home, tmp_path):
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.bin").write_bytes(MODEL_BYTES)
    (folder / "sub" / "b.bin").write_bytes(b"b" * 100)
    registry.register("m", folder)
    copy = amlocal_home / "models" / "m" / "1" / "model" / "sub" / "b.bin"

    with registry.open_file("m", 1, "model/a.bin") as handle:
        assert handle.read() == MODEL_BYTES
    with pytest.raises(UserInputError, match="model m:1 has no file 'model/c.bin'"):
        registry.open_file("m", 1, "model/c.bin")
    with pytest.raises(ModelNotFoundError):
        registry.open_file("m", 2, "model/a.bin")
    copy.chmod(0o644)
    copy.write_bytes(b"b" * 99 + b"X")
    with pytest.raises(RunRecordCorruptedError, match="damaged: model/sub/b.bin is not the file"):
        registry.open_file("m", 1, "model/sub/b.bin")
    copy.unlink()
    copy.symlink_to(folder / "sub" / "b.bin")  # the same bytes, but through a link: not followed
    with pytest.raises(RunRecordCorruptedError, match="model/sub/b.bin is missing or not a "
                                                      "regular file"):
        registry.open_file("m", 1, "model/sub/b.bin")


def test_a_damaged_record_is_reported_not_served(catalog, store, ws):
    with store.transaction() as conn:
        conn.execute("UPDATE models SET tags = '{not json' WHERE name = 'rnn'")

    with pytest.raises(RunRecordCorruptedError, match="model rnn:1's record is damaged"):
        catalog.get("rnn")
    listed = catalog.list()
    assert [r["id"] for r in listed] == ["cnn:3", "cnn:2", "cnn:1", "rnn:1"]
    assert "record is damaged" in listed[-1]["corrupted"]
    assert [m.id for m in Model.list(ws)] == ["cnn:3", "cnn:2", "cnn:1"]
    shown = invoke("models", "show", "rnn")
    assert shown.exit_code == 5 and "record is damaged" in shown.stderr
    assert "DAMAGED" in invoke("models", "list").stdout


# -- changing and deleting ------------------------------------------------------------------------

def test_tags_properties_and_description_change(catalog):
    record = catalog.update("cnn", 2, description="best so far", add_tags={"owner": "ana"},
                            remove_tags=["stage", "not-there"])
    assert record["description"] == "best so far"
    assert record["tags"] == {"area": "vision", "owner": "ana"}

    record = catalog.add_properties("cnn", 2, {"dataset": "mnist-10k"})
    assert record["properties"] == {"accuracy": "0.97", "dataset": "mnist-10k"}
    with pytest.raises(UserInputError, match="properties are immutable, the following keys "
                                             "cannot be added/modified: accuracy"):
        catalog.add_properties("cnn", 2, {"accuracy": "0.99", "new": "x"})
    assert catalog.get("cnn", 2)["properties"] == {"accuracy": "0.97", "dataset": "mnist-10k"}

    record = catalog.update("cnn", 2, tags={"only": "this"})
    assert record["tags"] == {"only": "this"}
    assert catalog.remove_tags("cnn", 2, "only")["tags"] == {}
    assert catalog.add_tags("cnn", 1, {"x": "1"})["tags"] == {"area": "vision", "stage": "dev",
                                                              "x": "1"}
    with pytest.raises(ModelNotFoundError):
        catalog.update("cnn", 7, description="x")


def test_delete_removes_record_and_files_and_the_number_is_not_reused(catalog, amlocal_home,
                                                                      tmp_path):
    catalog.delete("cnn", 3)

    assert not (amlocal_home / "models" / "cnn" / "3").exists()
    assert (amlocal_home / "models" / "cnn" / "2").is_dir()
    assert catalog.get("cnn")["version"] == 2
    assert [r["id"] for r in catalog.list(name="cnn")] == ["cnn:2", "cnn:1"]
    with pytest.raises(ModelNotFoundError):
        catalog.delete("cnn", 3)
    assert catalog.register("cnn", tmp_path / "m.bin")["version"] == 4

    catalog.delete("rnn", 1)
    assert not (amlocal_home / "models" / "rnn").exists()
    assert [p.name for p in (amlocal_home / "models").iterdir() if not p.name.startswith(".")] \
        == ["cnn"]


def test_what_a_dead_process_left_is_cleared_and_an_uncommitted_delete_undone(store, registry,
                                                                             amlocal_home,
                                                                             tmp_path):
    (tmp_path / "m.bin").write_bytes(b"m")
    registry.register("kept", tmp_path / "m.bin")
    registry.register("gone", tmp_path / "m.bin")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    models = amlocal_home / "models"
    # A deletion of kept:1 that died before committing: its files were moved to the trash.
    (models / "kept" / "1").rename(models / f".deleting-{dead}-aaaa")
    (models / f".deleting-{dead}-aaaa.json").write_text('{"name": "kept", "version": 1}')
    # A deletion of gone:1 that died after committing.
    with store.transaction() as conn:
        conn.execute("DELETE FROM models WHERE name = 'gone'")
    (models / "gone" / "1").rename(models / f".deleting-{dead}-bbbb")
    (models / f".deleting-{dead}-bbbb.json").write_text('{"name": "gone", "version": 1}')
    # Registrations in progress: one of a dead process, one of a live one (this one).
    (models / ".staging" / f"{dead}-cccc" / "m.bin").parent.mkdir(parents=True)
    (models / ".staging" / f"{os.getpid()}-dddd").mkdir()

    ModelRegistry(store)

    assert registry.verified_path("kept", 1).read_bytes() == b"m"
    assert sorted(p.name for p in models.iterdir()) == [".staging", "gone", "kept"]
    assert not list((models / "gone").iterdir())
    assert [p.name for p in (models / ".staging").iterdir()] == [f"{os.getpid()}-dddd"]


# -- the SDK: amlocal.Model -------------------------------------------------------------------------

@pytest.fixture
def ws(amlocal_home):
    return Workspace.get("local")


def test_model_register_get_and_list_as_azureml(ws, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("sklearn_regression_model.pkl").write_bytes(b"ridge")

    model = Model.register(ws, model_path="sklearn_regression_model.pkl",
                           model_name="sklearn_regression_model",
                           tags={"area": "diabetes", "type": "regression"},
                           description="Ridge regression model to predict diabetes",
                           model_framework=Model.Framework.SCIKITLEARN,
                           model_framework_version="1.5.0")
    Model.register(ws, "sklearn_regression_model.pkl", "sklearn_regression_model",
                   tags={"area": "diabetes"})

    assert (model.name, model.version, model.id) == ("sklearn_regression_model", 1,
                                                      "sklearn_regression_model:1")
    assert model.tags == {"area": "diabetes", "type": "regression"}
    assert model.model_framework == "ScikitLearn" and model.model_framework_version == "1.5.0"
    assert model.created_time.tzinfo is not None and model.run_id is None
    assert model.url.startswith("file://") and model.url.endswith("/1/sklearn_regression_model.pkl")
    assert Model(ws, "sklearn_regression_model").version == 2
    assert Model(ws, "sklearn_regression_model", version=1).tags["type"] == "regression"
    assert Model(ws, id="sklearn_regression_model:1").description.startswith("Ridge")
    assert Model(ws, "sklearn_regression_model", tags=[["type", "regression"]]).version == 1
    assert [m.id for m in Model.list(ws, tags=["area"])] == ["sklearn_regression_model:2",
                                                             "sklearn_regression_model:1"]
    assert [m.version for m in Model.list(ws, name="sklearn_regression_model", latest=True)] == [2]
    assert Model.list(ws, dataset_id="any") == []
    assert set(model.serialize()) == {
        "createdTime", "createdBy", "description", "id", "mimeType", "name", "framework",
        "frameworkVersion", "tags", "properties", "unpack", "url", "version", "experimentName",
        "runId", "runDetails", "datasets", "resourceConfiguration", "sampleInputDatasetId",
        "sampleOutputDatasetId"}
    assert Model.deserialize(ws, model.serialize()).id == model.id
    assert "name=sklearn_regression_model, id=sklearn_regression_model:1, version=1" in repr(model)


def test_model_errors_are_azuremls(ws, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("m.bin").write_bytes(b"m")
    Model.register(ws, "m.bin", "m")

    with pytest.raises(WebserviceException) as raised:
        Model(ws, "nope")
    assert raised.value.message == "ModelNotFound: Model with name nope not found in provided workspace"
    with pytest.raises(WebserviceException, match="ModelNotFound: Model with name m, version 5 not "
                                                  "found in provided workspace"):
        Model(ws, "m", version=5)
    with pytest.raises(WebserviceException, match="Model with id m:9 not found"):
        Model(ws, id="m:9")
    with pytest.raises(WebserviceException, match="Error, one of id or name must be provided."):
        Model(ws)
    with pytest.raises(WebserviceException, match="^Error, provided model name is invalid"):
        Model.register(ws, "m.bin", "bad name")
    with pytest.raises(WebserviceException, match="Model framework version cannot be provided"):
        Model.register(ws, "m.bin", "m", model_framework_version="1")
    with pytest.raises(WebserviceException, match="Tags must be a dict"):
        Model.register(ws, "m.bin", "m", tags=["a"])
    with pytest.raises(FileNotFoundError, match="Path does not exist"):
        Model.register(ws, "absent.bin", "m")
    outside = tmp_path.parent / "outside.bin"
    outside.write_bytes(b"o")
    with pytest.raises(PermissionError, match="Path outside current working directory"):
        Model.register(ws, str(outside), "m")
    with pytest.raises(UserErrorException, match="Expected tags must be list type"):
        Model.list(ws, tags="area")
    with pytest.raises(UserErrorException, match="Expected page_count value is between 20 and 255"):
        Model.list(ws, page_count=5)
    assert [m.version for m in Model.list(ws)] == [1]  # none of the refused ones registered


def test_model_folder_with_child_paths(ws, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bundle" / "sub").mkdir(parents=True)
    (tmp_path / "bundle" / "keep.txt").write_text("k")
    (tmp_path / "bundle" / "skip.txt").write_text("s")
    (tmp_path / "bundle" / "sub" / "deep.txt").write_text("d")

    model = Model.register(ws, "bundle", "bundle", child_paths=["keep.txt", "sub"])
    path = model.download(target_dir=str(tmp_path / "out"))

    assert path == str(tmp_path / "out" / "bundle")
    assert tree(tmp_path / "out") == {"bundle/keep.txt": b"k", "bundle/sub/deep.txt": b"d"}
    with pytest.raises(WebserviceException, match='Error, provided child path "gone" cannot be found'):
        Model.register(ws, "bundle", "bundle", child_paths=["gone"])


def test_model_download_update_and_delete(ws, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("m.bin").write_bytes(b"weights")
    model = Model.register(ws, "m.bin", "m", properties={"accuracy": "0.9"})

    assert model.download("out") == os.path.join("out", "m.bin")
    with pytest.raises(WebserviceException, match="File already exists. To overwrite, set "
                                                  "exist_ok to True. out/m.bin"):
        model.download("out")
    assert model.download("out", exist_ok=True) == os.path.join("out", "m.bin")
    # azureml-core refuses exists_ok next to exist_ok, whose default False counts as set.
    with pytest.raises(WebserviceException, match="Both exists_ok and exist_ok are set"):
        model.download("out", exists_ok=True)
    assert model.download("out2", exist_ok=None, exists_ok=True) == os.path.join("out2", "m.bin")

    model.update(tags={"stage": "dev"}, description="first")
    model.add_tags({"owner": "ana"})
    model.remove_tags(["stage"])
    model.add_properties({"epochs": "5"})
    with pytest.raises(WebserviceException, match="properties are immutable, the following keys "
                                                  "cannot be added/modified: accuracy"):
        model.add_properties({"accuracy": "1.0"})
    again = Model(ws, "m")
    assert (again.tags, again.properties, again.description) == (
        {"owner": "ana"}, {"accuracy": "0.9", "epochs": "5"}, "first")
    assert (model.tags, model.properties) == (again.tags, again.properties)
    model.update(tags={}, description="")  # empty values change nothing, as in azureml-core
    assert Model(ws, "m").description == "first"

    model.delete()
    with pytest.raises(WebserviceException, match="ModelNotFound"):
        Model(ws, "m")
    with pytest.raises(ModelNotFoundException):
        model.delete()


def test_register_model_from_run_is_what_run_register_model_does(store, registry, ws):
    run_id = new_run(store, {"outputs/model.npz": MODEL_BYTES})

    model = register_model_from_run(registry, run_id, "mnist", "outputs/model.npz",
                                    tags={"epochs": "3"}, model_framework="Chainer",
                                    model_framework_version="7.8.1")
    from_workspace = register_model_from_run(ws, run_id, "mnist", model_path="outputs")

    assert (model.id, model.run_id, model.experiment_name) == ("mnist:1", run_id, "mnist")
    assert model.tags == {"epochs": "3"} and model.model_framework == "Chainer"
    assert from_workspace.version == 2 and Path(model.url[len("file://"):]).read_bytes() == MODEL_BYTES
    assert [m.id for m in Model.list(ws, run_id=run_id)] == ["mnist:2", "mnist:1"]
    assert from_workspace.run.id == run_id and run_id in from_workspace.serialize()["runDetails"]
    with pytest.raises(ModelPathNotFoundException) as raised:
        register_model_from_run(ws, run_id, "mnist", "outputs/x")
    assert raised.value.message.startswith(
        "Could not locate the provided model_path outputs/x in the set of files uploaded to the "
        "run: ['outputs/model.npz']")
    with pytest.raises(WebserviceException, match="Error, provided model name is invalid"):
        register_model_from_run(ws, run_id, "no spaces please", "outputs/model.npz")
    with pytest.raises(WebserviceException, match="datasets is not supported by amlocal"):
        register_model_from_run(ws, run_id, "mnist", "outputs/model.npz", datasets=[("x", 1)])
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        register_model_from_run(ws, run_id, "mnist", "outputs/model.npz", colour="red")
    assert len(Model.list(ws)) == 2
    via_run = ws.get_run(run_id).register_model("via-run", "outputs/model.npz", tags={"a": "b"})
    assert (via_run.id, via_run.run_id, via_run.tags) == ("via-run:1", run_id, {"a": "b"})


def test_get_model_path_in_a_local_run_is_the_registry_copy(store, registry, ws, tmp_path,
                                                            monkeypatch):
    run_id = new_run(store)
    register_model_from_run(registry, run_id, "mnist", "outputs/model.npz")
    register_model_from_run(registry, run_id, "mnist", "outputs")
    monkeypatch.chdir(tmp_path)

    assert Model.get_model_path("mnist", _workspace=ws).endswith("models/mnist/2/outputs")
    monkeypatch.setenv("AZUREML_RUN_ID", run_id)  # as inside a run of this run history
    path = Model.get_model_path("mnist", version=1)
    assert path == str(store.home / "models" / "mnist" / "1" / "model.npz")
    assert Path(path).read_bytes() == MODEL_BYTES
    with pytest.raises(ModelNotFoundException, match=r"Model/Version nope/None not found in "
                                                     r"workspace. \['mnist/1', 'mnist/2'\]"):
        Model.get_model_path("nope")
    with pytest.raises(WebserviceException, match="version should be an int"):
        Model.get_model_path("mnist", version="1")


def test_get_model_path_outside_a_run_looks_where_azureml_does(amlocal_home, tmp_path, monkeypatch):
    monkeypatch.delenv("AZUREML_RUN_ID", raising=False)
    monkeypatch.delenv("AML_APP_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    for version in (1, 3):
        (tmp_path / "azureml-models" / "clf" / str(version)).mkdir(parents=True)
        (tmp_path / "azureml-models" / "clf" / str(version) / "model.pkl").write_text(str(version))
    (tmp_path / "local-model").write_text("here")

    assert Model.get_model_path("clf") == os.path.join("azureml-models", "clf", "3", "model.pkl")
    assert Model.get_model_path("clf", version=1) == os.path.join("azureml-models", "clf", "1",
                                                                  "model.pkl")
    assert Model.get_model_path("local-model") == "local-model"
    with pytest.raises(ModelNotFoundException, match="Model absent not found in cache at "
                                                     "azureml-models or in current working"):
        Model.get_model_path("absent")
    monkeypatch.setenv("AML_APP_ROOT", str(tmp_path / "app"))
    with pytest.raises(ModelNotFoundException, match="not found in cache at .*app/azureml-models"):
        Model.get_model_path("clf")


# -- the command line -----------------------------------------------------------------------------

def test_cli_register_list_show_download_update_delete(store, tmp_path):
    run_id = new_run(store, {"outputs/model.npz": MODEL_BYTES, "outputs/labels.txt": b"0-9"})
    (tmp_path / "local.bin").write_bytes(b"local")

    from_run = invoke("models", "register", "--run", run_id, "--name", "mnist", "--path",
                      "outputs/model.npz", "--tag", "stage=dev", "--tag", "area=digits",
                      "--property", "accuracy=0.9", "--description", "MLP", "--json")
    folder = invoke("models", "register", "--run", run_id, "--name", "mnist", "--path",
                    "outputs", "--json")
    local = invoke("models", "register", "--from-path", tmp_path / "local.bin", "--name", "other",
                   "--framework", "PyTorch", "--framework-version", "2.3", "--json")
    text = invoke("models", "register", "--from-path", tmp_path / "local.bin", "--name", "other")

    assert from_run.exit_code == 0, from_run.output
    record = last_json(from_run)
    assert (record["id"], record["run_id"], record["run_path"]) == ("mnist:1", run_id,
                                                                   "outputs/model.npz")
    assert record["tags"] == {"stage": "dev", "area": "digits"}
    assert record["properties"] == {"accuracy": "0.9"} and record["description"] == "MLP"
    assert record["files"][0]["path"] == "model.npz" and len(record["files"][0]["sha256"]) == 64
    assert last_json(folder)["id"] == "mnist:2"
    assert (last_json(local)["id"], last_json(local)["framework"]) == ("other:1", "PyTorch")
    assert text.stdout.startswith("Registered model other:2 (local files): ")

    listed = last_json(invoke("models", "list", "--json"))
    assert [r["id"] for r in listed] == ["other:2", "other:1", "mnist:2", "mnist:1"]
    assert [r["id"] for r in last_json(invoke("models", "list", "--latest", "--json"))] == [
        "other:2", "mnist:2"]
    assert [r["id"] for r in last_json(invoke("models", "list", "--tag", "stage=dev", "--json"))] \
        == ["mnist:1"]
    assert [r["id"] for r in last_json(invoke("models", "list", "--tag", "area", "--tag",
                                              "stage=prod", "--json"))] == []
    assert [r["id"] for r in last_json(invoke("models", "list", "--name", "mnist", "--run",
                                              run_id, "--json"))] == ["mnist:2", "mnist:1"]
    table = invoke("models", "list").stdout.splitlines()
    assert table[0].split() == ["NAME", "VERSION", "FRAMEWORK", "CREATED", "SOURCE", "TAGS"]
    assert len(table) == 5

    shown = last_json(invoke("models", "show", "mnist", "--json"))
    assert shown["id"] == "mnist:2" and [f["path"] for f in shown["files"]] == [
        "outputs/labels.txt", "outputs/model.npz"]
    assert last_json(invoke("models", "show", "mnist:1", "--json"))["tags"]["stage"] == "dev"
    shown_text = invoke("models", "show", "mnist:1").stdout
    assert "Model:        mnist:1" in shown_text and f"run {run_id}: outputs/model.npz" in shown_text

    down = invoke("models", "download", "mnist:1", "-o", tmp_path / "down", "--json")
    assert last_json(down) == {"path": str(tmp_path / "down" / "model.npz")}
    assert (tmp_path / "down" / "model.npz").read_bytes() == MODEL_BYTES
    assert invoke("models", "download", "mnist:1", "-o", tmp_path / "down",
                  "--exist-ok").exit_code == 0

    updated = last_json(invoke("models", "update", "mnist:1", "--tag", "stage=prod",
                               "--remove-tag", "area", "--property", "epochs=3", "--json"))
    assert updated["tags"] == {"stage": "prod"}
    assert updated["properties"] == {"accuracy": "0.9", "epochs": "3"}

    deleted = invoke("models", "delete", "mnist:2")
    assert deleted.exit_code == 0 and deleted.stdout.strip() == "Deleted model mnist:2"
    assert [r["id"] for r in last_json(invoke("models", "list", "--name", "mnist", "--json"))] \
        == ["mnist:1"]


def _cli_bad_input(store, tmp_path):
    run_id = new_run(store, {"outputs/model.npz": MODEL_BYTES})
    (tmp_path / "m.bin").write_bytes(b"m")
    invoke("models", "register", "--from-path", tmp_path / "m.bin", "--name", "m")
    (tmp_path / "down").mkdir()
    (tmp_path / "down" / "m.bin").write_bytes(b"already here")
    return {
        "unknown model": (["show", "nope"], 4, "no model named 'nope'"),
        "unknown version": (["show", "m:7"], 4, "model 'm' has no version 7 (its versions: 1)"),
        "unknown version to download": (["download", "m:7", "-o", tmp_path / "x"], 4,
                                        "has no version 7"),
        "unknown version to delete": (["delete", "m:7"], 4, "has no version 7"),
        "bad version": (["show", "m:latest"], 2, "a model version is a positive integer"),
        "bad name": (["register", "--from-path", tmp_path / "m.bin", "--name", "-m"], 2,
                     "provided model name '-m' is invalid. It must only consist of letters"),
        "path not among the run's files": (
            ["register", "--run", run_id, "--name", "m", "--path", "outputs/x"], 2,
            "Could not locate the provided model_path outputs/x in the set of files uploaded to "
            "the run: ['outputs/model.npz']"),
        "unknown run": (["register", "--run", "exp_1_deadbeef", "--name", "m", "--path",
                         "outputs/model.npz"], 4, "no run with id 'exp_1_deadbeef'"),
        "missing local path": (["register", "--from-path", tmp_path / "absent", "--name", "m"], 2,
                               "cannot be found"),
        "both sources": (["register", "--run", run_id, "--from-path", tmp_path / "m.bin",
                          "--name", "m"], 2, "give either --run RUN"),
        "no source": (["register", "--name", "m"], 2, "give either --run RUN"),
        "malformed tag": (["register", "--from-path", tmp_path / "m.bin", "--name", "m",
                           "--tag", "stage"], 2, "--tag expects KEY=VALUE"),
        "download onto a file that is there": (["download", "m", "-o", tmp_path / "down"], 2,
                                               "File already exists. To overwrite, set exist_ok"),
        "delete without a version": (["delete", "m"], 2, "expected NAME:VERSION"),
        "changing a property": (["update", "m:1", "--property", "x=1"], None, None),
    }


@pytest.mark.parametrize("case", ["unknown model", "unknown version", "unknown version to download",
                                  "unknown version to delete", "bad version", "bad name",
                                  "path not among the run's files", "unknown run",
                                  "missing local path", "both sources", "no source",
                                  "malformed tag", "download onto a file that is there",
                                  "delete without a version"])
def test_cli_bad_input_is_one_line_and_changes_nothing(store, tmp_path, case):
    args, exit_code, message = _cli_bad_input(store, tmp_path)[case]
    before = last_json(invoke("models", "list", "--json"))

    result = invoke("models", *args)

    assert result.exit_code == exit_code, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: ")
    assert message in result.stderr
    assert last_json(invoke("models", "list", "--json")) == before
    assert (tmp_path / "down" / "m.bin").read_bytes() == b"already here"


def test_cli_property_change_is_refused(store, tmp_path):
    (tmp_path / "m.bin").write_bytes(b"m")
    invoke("models", "register", "--from-path", tmp_path / "m.bin", "--name", "m", "--property",
           "x=1")

    result = invoke("models", "update", "m:1", "--property", "x=2")

    assert result.exit_code == 2
    assert "properties are immutable, the following keys cannot be added/modified: x" in result.stderr
    assert last_json(invoke("models", "show", "m", "--json"))["properties"] == {"x": "1"}


def test_cli_registers_a_real_runs_output_and_refuses_it_once_damaged(amlocal_home, tmp_path):
    source = write_script(tmp_path / "src", "train.py",
                          "import os\nimport numpy as np\nos.makedirs('outputs', exist_ok=True)\n"
                          "np.savez('outputs/model.npz', w=np.arange(12.0).reshape(3, 4))\n")
    ran = invoke("run", source, "--script", "train.py", "--executor", "process", "--json")
    run = last_json(ran)
    assert run["status"] == "Completed", ran.output

    registered = invoke("models", "register", "--run", run["id"], "--name", "tiny", "--path",
                        "outputs/model.npz", "--json")
    assert registered.exit_code == 0, registered.output
    downloaded = invoke("models", "download", "tiny:1", "-o", tmp_path / "down")
    with np.load(downloaded.stdout.strip()) as model:
        assert model["w"].tolist() == np.arange(12.0).reshape(3, 4).tolist()

    scorer = write_script(tmp_path / "score", "score.py",
                          "import numpy as np\nfrom amlocal import Model\n"
                          "path = Model.get_model_path('tiny')\n"
                          "print('model at', path, np.load(path)['w'].sum())\n")
    scored = invoke("run", scorer, "--script", "score.py", "--executor", "process")
    assert scored.exit_code == 0, scored.output
    assert (f"model at {amlocal_home / 'models' / 'tiny' / '1' / 'model.npz'} 66.0"
            in scored.stdout)

    run_file = amlocal_home / "runs" / run["id"] / "outputs" / "model.npz"
    data = bytearray(run_file.read_bytes())
    data[-5] ^= 0x01
    run_file.write_bytes(bytes(data))
    refused = invoke("models", "register", "--run", run["id"], "--name", "tiny", "--path",
                     "outputs/model.npz")

    assert refused.exit_code == 5
    assert "outputs/model.npz is damaged" in refused.stderr
    assert [r["id"] for r in last_json(invoke("models", "list", "--json"))] == ["tiny:1"]


# -- many processes, one name -----------------------------------------------------------------------

WORKER = r"""
import sys, time
from pathlib import Path
from amlocal.backends.history.models import ModelRegistry
from amlocal.backends.history.store import RunStore

worker, barrier, work = int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
registry = ModelRegistry(RunStore())
sources = []
for i in range(5):
    source = work / f"w{worker}-r{i}" / "model.bin"
    source.parent.mkdir(parents=True)
    source.write_bytes(f"worker {worker} registration {i} ".encode() * 1000)
    sources.append(source)
(work / f"ready-{worker}").touch()
while not barrier.exists():
    time.sleep(0.001)
for i, source in enumerate(sources):
    record = registry.register("shared", source, tags={"worker": str(worker), "i": str(i)})
    print(record["version"], worker, i, flush=True)
"""


def test_parallel_processes_registering_one_name_get_versions_1_to_50(store, amlocal_home,
                                                                      tmp_path):
    barrier = tmp_path / "go"
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(n), str(barrier), str(tmp_path)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=os.environ)
               for n in range(10)]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("ready-*"))) < 10:
        assert time.monotonic() < deadline, "workers did not get ready"
        assert all(worker.poll() is None for worker in workers), [w.stderr.read() for w in workers
                                                                  if w.poll() is not None]
        time.sleep(0.01)
    barrier.touch()
    outputs = [worker.communicate(timeout=120) for worker in workers]

    assert all(worker.returncode == 0 for worker in workers), [err for _out, err in outputs]
    given = [tuple(map(int, line.split())) for out, _err in outputs for line in out.splitlines()]
    assert sorted(version for version, _w, _i in given) == list(range(1, 51))
    registry = ModelRegistry(store)
    listed = registry.list(name="shared")
    assert [record["version"] for record in listed] == list(range(50, 0, -1))  # newest first
    records = {record["version"]: record for record in listed}
    for version, worker, i in given:
        expected = f"worker {worker} registration {i} ".encode() * 1000
        assert tree(amlocal_home / "models" / "shared" / str(version)) == {"model.bin": expected}
        assert records[version]["tags"] == {"worker": str(worker), "i": str(i)}
    assert list((amlocal_home / "models" / ".staging").iterdir()) == []


def test_a_registration_left_by_a_process_that_is_now_a_zombie_counts_as_abandoned():
    # One process_alive for the whole backend (processes.py): a zombie has exited.
    from amlocal.backends.history.models import _owner_gone

    zombie = subprocess.Popen([sys.executable, "-c", ""])
    try:
        deadline = time.monotonic() + 30
        while Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert _owner_gone(f"{zombie.pid}-0123abcd")
    finally:
        zombie.wait()
    assert not _owner_gone(f"{os.getpid()}-0123abcd")
