"""Datastores and data references, the way SDK v1 notebooks pass data to a run.

    ds = ws.get_default_datastore()
    ds.upload(src_dir="./mnist", target_path="mnist", overwrite=True)
    script_params = {"--data-dir": ds.path("mnist").as_mount()}

A local datastore is a folder under $AMLOCAL_HOME/datastores/<name>. A DataReference to a path
in it prints as `$AZUREML_DATAREFERENCE_<name>` (as in azureml-core), and a run given one as an
argument gets that path as a named input: mounted read-only, its in-run path in the argument and
in the environment variable of that name. `as_download()` gives the same read-only view (there is
no remote copy to download from).
"""

import os
import shutil
import uuid
from pathlib import Path

from amlocal.errors import UserInputError

DEFAULT_DATASTORE = "workspaceblobstore"
_MODES = ("mount", "download", "upload")


class Datastore:
    """A named folder of data in the local workspace."""

    def __init__(self, workspace, name=DEFAULT_DATASTORE):
        self.workspace = workspace
        self.name = name
        self.datastore_type = "AzureBlob"  # what notebooks check for the default datastore
        self.container_name = name
        self.account_name = "local"

    def __repr__(self):
        return f"Datastore(name={self.name!r}, root={str(self.root)!r})"

    @property
    def root(self):
        return Path(self.workspace._home) / "datastores" / self.name

    @staticmethod
    def get(workspace, datastore_name):
        return Datastore(workspace, datastore_name)

    def upload(self, src_dir, target_path=None, overwrite=False, show_progress=True):
        """Copy the files under src_dir to target_path in the datastore; return a DataReference."""
        source = Path(src_dir)
        if not source.is_dir():
            raise UserInputError(f"datastore upload: {src_dir} is not a folder")
        files = sorted(path for path in source.rglob("*") if path.is_file())
        return self.upload_files([str(path) for path in files], relative_root=str(source),
                                 target_path=target_path, overwrite=overwrite,
                                 show_progress=show_progress)

    def upload_files(self, files, relative_root=None, target_path=None, overwrite=False,
                     show_progress=True):
        """Copy files to target_path (keeping their paths below relative_root)."""
        destination = self._resolve(target_path)
        if show_progress:
            print(f"Uploading an estimated of {len(files)} files")
        uploaded = skipped = 0
        for file in files:
            file = Path(file)
            relative = file.relative_to(relative_root) if relative_root else Path(file.name)
            target = destination / relative
            if target.exists() and not overwrite:
                skipped += 1
                if show_progress:
                    print(f"Target already exists. Skipping upload for {relative.as_posix()}")
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".partial")
            shutil.copyfile(file, partial)
            os.replace(partial, target)
            uploaded += 1
            if show_progress:
                print(f"Uploading {file}\nUploaded {file}, {uploaded} files out of an estimated "
                      f"total of {len(files)}")
        if show_progress:
            print(f"Uploaded {uploaded} files")
        return DataReference(self, path_on_datastore=target_path)

    def download(self, target_path, prefix=None, overwrite=False, show_progress=True):
        """Copy the datastore's files (under prefix) into target_path; return how many."""
        count = 0
        for file in sorted(path for path in self.root.rglob("*") if path.is_file()):
            relative = file.relative_to(self.root).as_posix()
            if prefix and not relative.startswith(prefix):
                continue
            target = Path(target_path) / relative
            if target.exists() and not overwrite:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, target)
            count += 1
        if show_progress:
            print(f"Downloaded {count} files")
        return count

    def path(self, path=None, data_reference_name=None):
        """A DataReference to `path` in this datastore (the whole datastore when None)."""
        return DataReference(self, data_reference_name=data_reference_name, path_on_datastore=path)

    def as_mount(self):
        return self.path().as_mount()

    def as_download(self, path_on_compute=None):
        return self.path().as_download(path_on_compute)

    def _resolve(self, path):
        root = self.root.resolve()
        resolved = (root / (path or "")).resolve()
        if not resolved.is_relative_to(root):
            raise UserInputError(f"path {path!r} is outside datastore {self.name!r}")
        return resolved


class DataReference:
    """A path in a datastore, as a run input; str() is `$AZUREML_DATAREFERENCE_<name>`."""

    def __init__(self, datastore, data_reference_name=None, path_on_datastore=None, mode="mount",
                 path_on_compute=None, overwrite=False):
        if mode not in _MODES:
            raise UserInputError(f"Invalid mode {mode}. Only mount, download, upload are supported")
        self.datastore = datastore
        self.path_on_datastore = path_on_datastore
        self.mode = mode
        self.path_on_compute = path_on_compute
        self.overwrite = overwrite
        # azureml-core's naming: a fresh name per path, the datastore's name for its root.
        if data_reference_name:
            self.data_reference_name = data_reference_name
        elif path_on_datastore and path_on_datastore not in ("/", ".", "./"):
            self.data_reference_name = uuid.uuid4().hex
        else:
            self.data_reference_name = datastore.name

    def _clone(self, **changes):
        values = dict(datastore=self.datastore, data_reference_name=self.data_reference_name,
                      path_on_datastore=self.path_on_datastore, mode=self.mode,
                      path_on_compute=self.path_on_compute, overwrite=self.overwrite)
        values.update(changes)
        return DataReference(**values)

    def path(self, path=None, data_reference_name=None):
        joined = "/".join(part for part in (self.path_on_datastore, path) if part)
        return DataReference(self.datastore, data_reference_name, joined or None, self.mode)

    def as_mount(self):
        return self._clone(mode="mount")

    def as_download(self, path_on_compute=None, overwrite=False):
        return self._clone(mode="download", path_on_compute=path_on_compute, overwrite=overwrite)

    def as_upload(self, path_on_compute=None, overwrite=False):
        raise UserInputError("as_upload() outputs are not emulated: write to ./outputs instead")

    @property
    def host_path(self):
        """Where the referenced data is on this machine."""
        return self.datastore._resolve(self.path_on_datastore)

    def __str__(self):
        return f"$AZUREML_DATAREFERENCE_{self.data_reference_name}"

    __repr__ = __str__


def collect_inputs(values, inputs):
    """str() of each value, noting each DataReference among them in `inputs` (name -> host path)."""
    converted = []
    for value in values:
        if isinstance(value, DataReference):
            inputs[value.data_reference_name] = value.host_path
        converted.append(str(value))
    return converted
