"""`Environment` and `CondaDependencies`: what a run's image is made of, in SDK v1's words.

An Environment becomes an amlocal EnvironmentSpec: a recipe from docker/ ("python" unless a
framework asks for another), its base image (`env.docker.base_image`, `from_docker_image`), the
pip packages of `env.python.conda_dependencies`, or a Dockerfile of the user's
(`from_dockerfile`). A conda specification (`from_conda_specification`, `CondaDependencies`
files) is read for its pip packages; conda packages are not installed (there is no conda in the
images): asking for one is an error that says so, rather than a silently different environment.
Azure's own base images become the local base, and the build log says what differs.
"""

from pathlib import Path

from amlocal.backends.base import EnvironmentSpec
from amlocal.backends.recipes import (LOCAL_PYTHON_VERSION, azure_base_image_notes,
                                      conda_specification_parts, is_azure_base_image,
                                      package_name, recipe_for, DEFAULT_RECIPE)
from amlocal.errors import UserInputError

# Packages a recipe builds itself, with the version it builds: an environment whose pip packages
# ask for one of them is built on that recipe (Chainer's sdist cannot be pip-installed as it is:
# see docker/chainer), and the requirement is the recipe's.
_CURATED_PREFIXES = ("Microsoft", "AzureML")


class CondaDependencies:
    """An environment's conda specification, as azureml-core keeps it: a name, channels, conda
    packages (a python version among them) and pip packages. amlocal installs the pip packages
    with pip; its images have no conda, so a conda package is refused when the run is built
    (naming it), and the python version is the local base's (the build log says the difference).

    `CondaDependencies(path)` reads a conda environment file (YAML); `serialize_to_string` and
    `save_to_file` write one, so a specification round-trips through a file as on Azure. Unlike
    azureml-core's, `create` adds no azureml-defaults pip package: nothing here needs it.
    """

    DEFAULT_NAME = "project_environment"

    def __init__(self, conda_dependencies_file_path=None, _underlying_structure=None):
        document = _underlying_structure
        if conda_dependencies_file_path is not None:
            document = _read_conda_file(conda_dependencies_file_path)
        document = document or {}
        try:
            version, conda_packages, pip_packages = conda_specification_parts(document)
            channels = document.get("channels") or []
            if not isinstance(channels, list):
                raise ValueError("the conda specification's channels must be a list")
        except ValueError as error:
            where = f" {conda_dependencies_file_path}" if conda_dependencies_file_path else ""
            raise UserInputError(f"conda specification{where}: {error}") from None
        self._name = str(document.get("name") or self.DEFAULT_NAME)
        self._channels = [str(channel) for channel in channels]
        self._python_version = version
        self._conda_packages = list(conda_packages)
        self._pip_packages = []
        self._pip_options = []
        for entry in pip_packages:
            (self._pip_options if entry.startswith("-") else self._pip_packages).append(entry)

    @staticmethod
    def create(pip_indexurl=None, pip_packages=None, conda_packages=None, python_version=None,
               pin_sdk_version=True):
        dependencies = CondaDependencies()
        if python_version:
            dependencies.set_python_version(python_version)
        if pip_indexurl:
            dependencies.set_pip_option(f"--index-url {pip_indexurl}")
        for package in pip_packages or ():
            dependencies.add_pip_package(package)
        for package in conda_packages or ():
            dependencies.add_conda_package(package)
        return dependencies

    def add_pip_package(self, pip_package):
        if pip_package not in self._pip_packages:
            self._pip_packages.append(pip_package)

    def remove_pip_package(self, pip_package):
        self._pip_packages = [p for p in self._pip_packages if package_name(p) != package_name(pip_package)]

    def set_pip_option(self, pip_option):
        if pip_option not in self._pip_options:
            self._pip_options.append(pip_option)

    def add_conda_package(self, conda_package):
        if conda_package not in self._conda_packages:
            self._conda_packages.append(conda_package)

    def remove_conda_package(self, conda_package):
        self._conda_packages = [p for p in self._conda_packages
                                if package_name(p) != package_name(conda_package)]

    def add_channel(self, channel):
        if channel not in self._channels:
            self._channels.append(channel)

    def remove_channel(self, channel):
        self._channels = [c for c in self._channels if c != channel]

    def set_python_version(self, version):
        self._python_version = str(version)

    def get_python_version(self):
        return self._python_version

    @property
    def pip_packages(self):
        return list(self._pip_packages)

    @property
    def conda_packages(self):
        return list(self._conda_packages)

    @property
    def conda_channels(self):
        return list(self._channels)

    @property
    def pip_options(self):
        return list(self._pip_options)

    def as_dict(self):
        """The specification as a conda environment file's mapping (azureml-core's layout)."""
        dependencies = [f"python={self._python_version}"] if self._python_version else []
        dependencies += self._conda_packages
        pip = self._pip_options + self._pip_packages
        if pip:
            dependencies += ["pip", {"pip": pip}]
        document = {"name": self._name, "dependencies": dependencies}
        if self._channels:
            document["channels"] = list(self._channels)
        return document

    def serialize_to_string(self):
        import yaml

        return yaml.safe_dump(self.as_dict(), sort_keys=False, default_flow_style=False)

    def save_to_file(self, base_directory, conda_file_path=None):
        """Write the specification to base_directory/conda_file_path (default
        conda_dependencies.yml); returns the file's path."""
        path = Path(base_directory) / (conda_file_path or "conda_dependencies.yml")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.serialize_to_string(), encoding="utf-8")
        return str(path)

    def save(self, path=None):
        return self.save_to_file(".", path)


def _read_conda_file(path):
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    except OSError as error:
        raise UserInputError(f"cannot read the conda specification {path}: "
                             f"{error.strerror or error}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UserInputError(f"the conda specification {path} is not valid YAML{where}") from None


class PythonSection:
    def __init__(self):
        self.conda_dependencies = CondaDependencies()
        self.user_managed_dependencies = False
        self.interpreter_path = "python"


class DockerSection:
    def __init__(self):
        self.base_image = None
        self.base_dockerfile = None
        self.enabled = True


class Environment:
    """A named environment; `Environment(name)`, or one of the from_* constructors."""

    def __init__(self, name, _recipe=DEFAULT_RECIPE):
        if any(name.startswith(prefix) for prefix in _CURATED_PREFIXES):
            raise UserInputError(f"Environment names beginning with 'Microsoft' or 'AzureML' are "
                                 f"reserved for curated environments: {name!r}")
        self.name = name
        self.version = None
        self.python = PythonSection()
        self.docker = DockerSection()
        self.environment_variables = {}
        self._recipe = _recipe

    def __repr__(self):
        return f"Environment(Name: {self.name}, Version: {self.version})"

    @staticmethod
    def from_pip_requirements(name, file_path, pip_version=None):
        env = Environment(name)
        for line in Path(file_path).read_text().splitlines():
            requirement = line.split("#", 1)[0].strip()
            if requirement:
                env.python.conda_dependencies.add_pip_package(requirement)
        return env

    @staticmethod
    def from_conda_specification(name, file_path):
        """An environment from a conda environment file: its pip packages are installed with
        pip; a conda-only package is refused when the run is built, naming it."""
        env = Environment(name)
        env.python.conda_dependencies = CondaDependencies(file_path)
        return env

    @staticmethod
    def from_dockerfile(name, dockerfile, conda_specification=None, pip_requirements=None):
        """`dockerfile` is the Dockerfile's text or a path to one."""
        env = Environment.from_pip_requirements(name, pip_requirements) if pip_requirements \
            else Environment(name)
        path = Path(dockerfile) if "\n" not in dockerfile else None
        env.docker.base_dockerfile = path.read_text() if path and path.is_file() else dockerfile
        if conda_specification:
            env.python.conda_dependencies = CondaDependencies(conda_specification)
        return env

    @staticmethod
    def from_docker_image(name, image, container_registry=None, conda_specification=None,
                          pip_requirements=None):
        env = Environment.from_pip_requirements(name, pip_requirements) if pip_requirements \
            else Environment(name)
        env.docker.base_image = image
        if conda_specification:
            env.python.conda_dependencies = CondaDependencies(conda_specification)
        return env

    def register(self, workspace):
        return self

    def _to_spec(self):
        """The EnvironmentSpec amlocal builds for this environment; the build log's first lines
        say what differs from Azure's build of it."""
        dependencies = self.python.conda_dependencies
        if dependencies.conda_packages:
            raise UserInputError(f"environment {self.name!r} asks for conda packages "
                                 f"({', '.join(dependencies.conda_packages)}); amlocal images "
                                 "have no conda: ask for them as pip packages")
        notes = []
        if dependencies.pip_options:
            notes.append(f"The environment's pip options ({'; '.join(dependencies.pip_options)}) "
                         "are not used: builds here use this host's pip settings (index, proxy, "
                         "CA bundle).")
        base_image = self.docker.base_image
        python_version = dependencies.get_python_version()
        if base_image is not None and is_azure_base_image(base_image):
            notes += azure_base_image_notes(base_image, python_version)
            base_image = None
        elif python_version and ".".join(python_version.split(".")[:2]) != LOCAL_PYTHON_VERSION:
            notes.append(f"The conda specification asks for Python {python_version}: the image's "
                         "own Python runs the script (no conda here to install another).")
        recipe, pip_packages, note = recipe_for(self.name, self._recipe,
                                                dependencies.pip_packages)
        notes += [note] if note else []
        return EnvironmentSpec(recipe=recipe, pip_packages=pip_packages,
                               base_image=base_image, dockerfile=self.docker.base_dockerfile,
                               build_notes=tuple(notes))
