"""`Model` shaped as in azureml-core (SDK v1), over the local model registry.

    model = Model.register(ws, model_path="outputs/model.npz", model_name="mnist",
                           tags={"area": "digits"}, description="Chainer MLP")
    model = Model(ws, "mnist")                  # the latest version; Model(ws, "mnist", version=1)
    Model.list(ws, tags=[["area", "digits"]], latest=True)
    path = model.download(target_dir="./m", exist_ok=True)
    model.add_tags({"stage": "prod"}); model.add_properties({"accuracy": "0.97"}); model.delete()

A registered model is a copy of the file or folder in $AMLOCAL_HOME/models/<name>/<version>/
(backends/history/models.py), numbered 1, 2, 3, ... per name. Models of runs are registered with
`register_model_from_run` (what `run.register_model(...)` does) from the files the run left.

Errors are azureml-core's: WebserviceException for what the model management service refuses
(a bad name, an unknown model: "ModelNotFound: Model with name x not found in provided
workspace", a file that is already there), ModelNotFoundException from get_model_path (a
subclass of WebserviceException here, so both `except` clauses catch a missing model),
ModelPathNotFoundException when a run has no such file, UserErrorException for Model.list's
argument checks. A damaged registry copy or run file raises amlocal's RunRecordCorruptedError.

Differences, on purpose:
* Nothing is printed (azureml-core prints "Registering model ..." and "Model tag add operation
  complete.").
* `datasets`, `sample_input_dataset`, `sample_output_dataset` and `resource_configuration` are
  accepted as None only: amlocal has no datasets or profiling, and says so.
* `download` returns the model's path (target_dir/<file or folder name>); azureml-core returns the
  common path of the downloaded files, the same path except for a folder whose files all sit in
  one subfolder. A refused download (a file already there, a damaged copy) writes nothing.
* `Model.get_model_path` resolves to the registry's own copy (after checking it) where azureml-core
  downloads into ./azureml-models: with `_workspace`, or inside a local run (AZUREML_RUN_ID names
  a run of the run history). Elsewhere it looks where azureml-core looks:
  $AML_APP_ROOT/azureml-models/<name>/<version>/ (one file or folder there), then ./<name>.
  AZUREML_MODEL_DIR is not read, as azureml-core 1.61 does not read it either.
"""

import datetime
import os

from amlocal import model_lookup
from amlocal.errors import AmlocalError, UserInputError
from amlocal.model_errors import (_UNSUPPORTED, ModelNotFoundException,  # noqa: F401 (SDK names)
                                  ModelPathNotFoundException, UserErrorException,
                                  WebserviceException, _check_metadata, _check_name, _models,
                                  _not_found_message, _translate)


def _registry(workspace_or_registry):
    """The model registry of a Workspace (its backend's), or the registry given."""
    if isinstance(workspace_or_registry, _models().ModelRegistry):
        return workspace_or_registry
    if getattr(workspace_or_registry, "_home", None) is None:
        raise WebserviceException(
            f"amlocal's models need amlocal's Workspace (Workspace.from_config()), got "
            f"{type(workspace_or_registry).__name__}")
    return workspace_or_registry._backend().models()


def _workspace_of(workspace_or_registry, registry):
    """The Workspace a Model reports: the one given, or the local one of the registry's home."""
    if getattr(workspace_or_registry, "_home", None) is not None:
        return workspace_or_registry
    from amlocal.workspace import Workspace

    workspace = Workspace()
    workspace._home = registry.home
    return workspace


class Model:
    """A registered model: name, version (1, 2, ... per name), id ('name:version'), files.

    `Model(workspace, name)` gets the latest version of a name, `Model(workspace, name,
    version=2)` or `Model(workspace, id="name:2")` one version; tags, properties, run_id and
    model_framework narrow the search. A model that is not there raises WebserviceException
    ("ModelNotFound: Model with name ... not found in provided workspace").
    """

    class Framework:
        """azureml-core's framework names."""

        CUSTOM = "Custom"
        TENSORFLOW = "TensorFlow"
        SCIKITLEARN = "ScikitLearn"
        ONNX = "Onnx"
        TFKERAS = "TfKeras"
        PYTORCH = "PyTorch"
        MULTI = "Multi"

    def __init__(self, workspace, name=None, id=None, tags=None, properties=None, version=None,
                 run_id=None, model_framework=None, expand=True, **kwargs):
        self.created_by = None
        self.created_time = None
        self.description = None
        self.id = None
        self.mime_type = None
        self.name = None
        self.model_framework = None
        self.model_framework_version = None
        self.tags = None
        self.properties = None
        self.unpack = None
        self.url = None
        self.version = None
        self.workspace = None
        self.experiment_name = None
        self.run_id = None
        self.datasets = {}
        self.sample_input_dataset = None
        self.sample_output_dataset = None
        self.resource_configuration = None
        self.parent_id = None
        self.derived_model_ids = None
        self._run = None
        self._run_loaded = False
        self._registry = None
        record = kwargs.pop("_record", None)
        if record is not None:
            self._initialize(workspace, record)
        elif workspace:
            registry = _registry(workspace)
            record = Model._get(registry, name, id, tags, properties, version, model_framework,
                                run_id)
            if record is None:
                raise ModelNotFoundException(_not_found_message(
                    name=name, id=id, tags=tags, properties=properties, version=version,
                    run_id=run_id, model_framework=model_framework, **kwargs))
            self._initialize(_workspace_of(workspace, registry), record, registry)

    def __repr__(self):
        return (f"{self.__class__.__name__}(workspace={self.workspace!r}, name={self.name}, "
                f"id={self.id}, version={self.version}, tags={self.tags}, "
                f"properties={self.properties})")

    def _initialize(self, workspace, record, registry=None):
        self.workspace = workspace
        self._registry = registry
        self.name = record["name"]
        self.version = record["version"]
        self.id = record["id"]
        self.description = record.get("description")
        self.model_framework = record.get("framework")
        self.model_framework_version = record.get("framework_version")
        self.tags = dict(record.get("tags") or {})
        self.properties = dict(record.get("properties") or {})
        self.unpack = False
        self.url = record.get("url")
        self.experiment_name = record.get("experiment_name")
        self.run_id = record.get("run_id")
        created = record.get("created_at")
        self.created_time = (datetime.datetime.fromtimestamp(created, datetime.timezone.utc)
                             if created is not None else None)

    def _get_registry(self):
        if self._registry is None:
            if self.workspace is None:
                raise WebserviceException("this Model has no workspace")
            self._registry = _registry(self.workspace)
        return self._registry

    @staticmethod
    def _get(registry, name=None, id=None, tags=None, properties=None, version=None,
             model_framework=None, run_id=None):
        """The record the constructor asks for, or None."""
        models = _models()
        if not id and not name:
            raise WebserviceException("Error, one of id or name must be provided.")
        try:
            if id:
                name, separator, version = str(id).partition(":")
                if not separator:
                    return None
                return registry.get(name, version)
            if not models.is_valid_model_name(name):
                return None
            if version:
                return registry.get(name, version)
            found = registry.list(name=name, tags=tags, properties=properties, run_id=run_id,
                                  framework=model_framework)
        except models.ModelNotFoundError:
            return None
        except UserInputError as error:
            if id or version:
                return None  # an id or version that cannot name a model names none
            raise UserErrorException(str(error)) from None
        found = [record for record in found if "corrupted" not in record]
        return max(found, key=lambda record: record["version"]) if found else None

    @property
    def run(self):
        """The Run that made the model (workspace.get_run), read on first use; else None."""
        if not self._run_loaded:
            self._run_loaded = True
            if self.run_id and self.workspace is not None:
                try:
                    self._run = self.workspace.get_run(self.run_id)
                except Exception:  # azureml-core also leaves run None when it cannot get it
                    self._run = None
        return self._run

    @run.setter
    def run(self, value):
        self._run = value
        self._run_loaded = True

    # -- registering ----------------------------------------------------------------------------

    @staticmethod
    def register(workspace, model_path, model_name, tags=None, properties=None, description=None,
                 datasets=None, model_framework=None, model_framework_version=None,
                 child_paths=None, sample_input_dataset=None, sample_output_dataset=None,
                 resource_configuration=None):
        """Register a local file or folder as the next version of model_name; return the Model.

        As azureml-core 1.61: model_path must exist (FileNotFoundError) and lie inside the
        current folder (PermissionError); with child_paths only those files and folders of the
        model_path folder are registered.
        """
        _check_name(model_name)
        _check_metadata(tags, properties, model_framework, model_framework_version,
                        {"datasets": datasets, "sample_input_dataset": sample_input_dataset,
                         "sample_output_dataset": sample_output_dataset,
                         "resource_configuration": resource_configuration})
        Model._validate_model_path(model_path, child_paths)
        registry = _registry(workspace)
        try:
            files = _models().collect_local_files(model_path, child_paths)
            record = registry.register(
                model_name, files, tags=tags or None, properties=properties or None,
                description=description, framework=model_framework,
                framework_version=model_framework_version)
        except AmlocalError as error:
            raise _translate(error) from None
        return _model(workspace, record, registry)

    @staticmethod
    def _validate_model_path(model_path, child_paths=None):
        """azureml-core 1.61's checks: the path exists and is inside the current folder."""
        cwd = os.path.abspath(os.getcwd())
        full = os.path.normpath(os.path.join(cwd, model_path))
        if not os.path.exists(full):
            raise FileNotFoundError("Path does not exist")
        if os.path.commonpath([full, cwd]) != cwd:
            raise PermissionError("Unauthorized access: Path outside current working directory")
        for path in child_paths or ():
            if not os.path.exists(os.path.join(full, path)):
                raise WebserviceException(f'Error, provided child path "{path}" cannot be found')

    # -- finding --------------------------------------------------------------------------------

    @staticmethod
    def list(workspace, name=None, tags=None, properties=None, run_id=None, latest=False,
             dataset_id=None, expand=True, page_count=255, model_framework=None):
        """The workspace's models that match, newest first (latest: each name's latest only).

        tags and properties: a list of 'key' or ['key', 'value'] entries, all of which must match.
        No model has datasets locally, so a dataset_id matches none.
        """
        if page_count and (page_count < 20 or page_count > 255):
            raise UserErrorException(
                f"Expected page_count value is between 20 and 255. Provided: {page_count}")
        if tags is not None and type(tags) is not list:
            raise UserErrorException('Expected tags must be list type. Ex. ["key", ["key2", '
                                     f'"key2 value"]]: provided {type(tags)}')
        registry = _registry(workspace)
        if dataset_id:
            return []
        try:
            records = registry.list(name=name, tags=tags, properties=properties, run_id=run_id,
                                    latest=latest, framework=model_framework)
        except UserInputError as error:
            raise UserErrorException(str(error)) from None
        return [_model(workspace, record, registry) for record in records
                if "corrupted" not in record]

    @staticmethod
    def get_model_path(model_name, version=None, _workspace=None):
        """The path of a model's file or folder on this machine.

        With _workspace, or inside a local run (whose run history is then used), the registry's
        own copy (checked against what was registered). Otherwise, as azureml-core without a
        workspace: $AML_APP_ROOT/azureml-models/<name>/<version or the highest>/ (which must hold
        one file or folder), then ./<name>; else ModelNotFoundException. A version given is
        looked for there first, as azureml-core does, then in the registry.
        """
        if version is not None and not isinstance(version, int):
            raise WebserviceException("version should be an int")
        registry = _registry(_workspace) if _workspace is not None else model_lookup.run_registry()
        if version is not None:
            try:
                return model_lookup.local_path(model_name, version)
            except ModelNotFoundException as error:
                if registry is None:
                    raise WebserviceException(error.message) from None
                return model_lookup.registry_path(model_name, version, registry)
        if registry is not None:
            return model_lookup.registry_path(model_name, version, registry)
        return model_lookup.local_path(model_name, version)

    # -- files ----------------------------------------------------------------------------------

    def download(self, target_dir=".", exist_ok=False, exists_ok=None):
        """Copy the model into target_dir; return the path of its file or folder there.

        A file that is already there is refused (WebserviceException "File already exists. To
        overwrite, set exist_ok to True. <path>") unless exist_ok. As in azureml-core, exists_ok
        is deprecated and refused alongside exist_ok, whose default (False) counts as set.
        """
        if exists_ok is not None:
            if exist_ok is not None:
                raise WebserviceException("Both exists_ok and exist_ok are set. Please use "
                                          "exist_ok only.")
            exist_ok = exists_ok
        try:
            path = self._get_registry().download(self.name, self.version, target_dir,
                                                 exist_ok=bool(exist_ok))
        except AmlocalError as error:
            raise _translate(error) from None
        return str(path)

    # -- changing -------------------------------------------------------------------------------

    def _change(self, **changes):
        try:
            record = self._get_registry().update(self.name, self.version, **changes)
        except AmlocalError as error:
            raise _translate(error) from None
        self.tags = dict(record["tags"])
        self.properties = dict(record["properties"])
        self.description = record["description"]

    def update(self, tags=None, description=None, sample_input_dataset=None,
               sample_output_dataset=None, resource_configuration=None, properties=None):
        """Replace the tags (when given and not empty) and the description (likewise).

        properties (amlocal's addition, keyword) adds properties; existing keys cannot change.
        """
        _check_metadata(tags, properties, None, None,
                        {"sample_input_dataset": sample_input_dataset,
                         "sample_output_dataset": sample_output_dataset,
                         "resource_configuration": resource_configuration})
        self._check_new_properties(properties)
        self._change(tags=tags or None, description=description or None,
                     add_properties=properties or None)

    def update_tags_properties(self, add_tags=None, remove_tags=None, add_properties=None):
        """Add and remove tags, add properties (existing property keys are refused)."""
        self._check_new_properties(add_properties)
        if remove_tags is not None and not isinstance(remove_tags, list):
            remove_tags = [remove_tags]
        if add_tags is None and remove_tags is None and add_properties is None:
            return
        self._change(add_tags=add_tags, remove_tags=remove_tags, add_properties=add_properties)

    def _check_new_properties(self, properties):
        duplicates = [key for key in properties or () if key in (self.properties or {})]
        if duplicates:
            raise WebserviceException("Error, properties are immutable, the following keys "
                                      f"cannot be added/modified: {','.join(duplicates)}")

    def add_tags(self, tags):
        """Add (or replace) these tags."""
        self.update_tags_properties(add_tags=tags)

    def remove_tags(self, tags):
        """Remove the tags with these keys (keys it does not have are passed over)."""
        self.update_tags_properties(remove_tags=tags)

    def add_properties(self, properties):
        """Add these properties; a key the model has already is refused (they are immutable)."""
        self.update_tags_properties(add_properties=properties)

    def delete(self):
        """Delete this version of the model, its record and its files."""
        try:
            self._get_registry().delete(self.name, self.version)
        except AmlocalError as error:
            raise _translate(error) from None

    @staticmethod
    def deploy(workspace, name, models, inference_config=None, deployment_config=None,
               deployment_target=None, overwrite=False, show_output=False):
        """Deploy models as a web service in the local Docker engine (amlocal/webservice.py);
        the Webservice, in state Transitioning (wait_for_deployment() follows it)."""
        from amlocal.webservice import _deploy

        if deployment_target is not None:
            raise UserErrorException("deployment_target is not supported by amlocal: every "
                                     "service runs in the local Docker engine")
        return _deploy(workspace, name, models, inference_config, deployment_config,
                       overwrite=overwrite, show_output=show_output)

    # -- as data --------------------------------------------------------------------------------

    def serialize(self):
        """The model as azureml-core's JSON dict."""
        return {
            "createdTime": self.created_time.isoformat() if self.created_time else None,
            "createdBy": self.created_by,
            "description": self.description,
            "id": self.id,
            "mimeType": self.mime_type,
            "name": self.name,
            "framework": self.model_framework,
            "frameworkVersion": self.model_framework_version,
            "tags": self.tags,
            "properties": self.properties,
            "unpack": self.unpack,
            "url": self.url,
            "version": self.version,
            "experimentName": self.experiment_name,
            "runId": self.run_id,
            "runDetails": str(self.run),
            "datasets": [],
            "resourceConfiguration": None,
            "sampleInputDatasetId": None,
            "sampleOutputDatasetId": None,
        }

    @staticmethod
    def deserialize(workspace, model_payload):
        """A Model from serialize()'s dict (read as it is; the registry is not asked)."""
        created = model_payload.get("createdTime")
        record = {
            "name": model_payload["name"], "version": model_payload["version"],
            "id": model_payload["id"], "description": model_payload.get("description"),
            "framework": model_payload.get("framework"),
            "framework_version": model_payload.get("frameworkVersion"),
            "tags": model_payload.get("tags"), "properties": model_payload.get("properties"),
            "url": model_payload.get("url"),
            "experiment_name": model_payload.get("experimentName"),
            "run_id": model_payload.get("runId"),
            "created_at": (datetime.datetime.fromisoformat(created).timestamp()
                           if created else None),
        }
        return Model(workspace, _record=record)


def register_model_from_run(workspace_or_registry, run, model_name, model_path=None, tags=None,
                            properties=None, model_framework=None, model_framework_version=None,
                            description=None, **kwargs):
    """Register a run's file or folder as a model; what `run.register_model(...)` does.

    workspace_or_registry: amlocal's Workspace (or a model registry, Backend.models()). `run`: a
    run id of that registry's history, or a run's handle (RunHandle), which registers the model
    where its backend keeps models (a run on Azure ML: in its workspace). model_path is a
    name among the run's files (run.get_file_names()) or a folder of them, e.g.
    'outputs/model.npz' or 'outputs'; None means model_name, as in azureml-core. A path that is
    not there raises ModelPathNotFoundException with azureml-core's message ("Could not locate
    the provided model_path ... in the set of files uploaded to the run: [...]"). Each file is
    checked against what PostProcessing recorded of it: a damaged one raises
    RunRecordCorruptedError. Returns the Model.
    """
    unknown = set(kwargs) - set(_UNSUPPORTED) - {"unpack"}
    if unknown:
        raise TypeError(f"register_model() got an unexpected keyword argument "
                        f"{sorted(unknown)[0]!r}")
    _check_name(model_name)
    _check_metadata(tags, properties, model_framework, model_framework_version, kwargs)
    from amlocal.backends.base import RunHandle

    metadata = dict(tags=tags or None, properties=properties or None, description=description,
                    framework=model_framework, framework_version=model_framework_version)
    registry = _registry(workspace_or_registry)
    try:
        if isinstance(run, RunHandle):
            record = run.register_model(model_name, model_path, **metadata)
        else:
            record = registry.register_from_run(run, model_name, model_path, **metadata)
    except AmlocalError as error:
        raise _translate(error) from None
    return _model(workspace_or_registry, record, registry)


def _model(workspace_or_registry, record, registry):
    model = Model(_workspace_of(workspace_or_registry, registry), _record=record)
    model._registry = registry
    return model
