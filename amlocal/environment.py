"""`Environment` and `CondaDependencies`: what a run's image is made of, in SDK v1's words.

An Environment becomes an amlocal EnvironmentSpec: a recipe from docker/ ("python" unless a
framework asks for another), its base image (`env.docker.base_image`, `from_docker_image`), the
pip packages of `env.python.conda_dependencies`, or a Dockerfile of the user's
(`from_dockerfile`). Conda packages are not installed (there is no conda in the images): asking
for one is an error that says so, rather than a silently different environment.
"""

from pathlib import Path

from amlocal.backends.base import EnvironmentSpec
from amlocal.errors import UserInputError

DEFAULT_RECIPE = "python"
_CURATED_PREFIXES = ("Microsoft", "AzureML")


class CondaDependencies:
    """The package lists of an environment (pip packages are what amlocal installs)."""

    def __init__(self, conda_dependencies_file_path=None, _underlying_structure=None):
        self._pip_packages = []
        self._conda_packages = []

    @staticmethod
    def create(pip_indexurl=None, pip_packages=None, conda_packages=None, python_version=None,
               pin_sdk_version=True):
        dependencies = CondaDependencies()
        for package in pip_packages or ():
            dependencies.add_pip_package(package)
        for package in conda_packages or ():
            dependencies.add_conda_package(package)
        return dependencies

    def add_pip_package(self, pip_package):
        if pip_package not in self._pip_packages:
            self._pip_packages.append(pip_package)

    def remove_pip_package(self, pip_package):
        self._pip_packages = [p for p in self._pip_packages if p != pip_package]

    def add_conda_package(self, conda_package):
        self._conda_packages.append(conda_package)

    @property
    def pip_packages(self):
        return list(self._pip_packages)

    @property
    def conda_packages(self):
        return list(self._conda_packages)


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
    def from_dockerfile(name, dockerfile, conda_specification=None, pip_requirements=None):
        """`dockerfile` is the Dockerfile's text or a path to one."""
        env = Environment.from_pip_requirements(name, pip_requirements) if pip_requirements \
            else Environment(name)
        path = Path(dockerfile) if "\n" not in dockerfile else None
        env.docker.base_dockerfile = path.read_text() if path and path.is_file() else dockerfile
        if conda_specification:
            raise UserInputError("conda specifications are not supported by amlocal: list the "
                                 "packages in a pip requirements file instead")
        return env

    @staticmethod
    def from_docker_image(name, image, container_registry=None, conda_specification=None,
                          pip_requirements=None):
        env = Environment.from_pip_requirements(name, pip_requirements) if pip_requirements \
            else Environment(name)
        env.docker.base_image = image
        if conda_specification:
            raise UserInputError("conda specifications are not supported by amlocal: list the "
                                 "packages in a pip requirements file instead")
        return env

    def register(self, workspace):
        return self

    def _to_spec(self):
        """The EnvironmentSpec amlocal builds for this environment."""
        dependencies = self.python.conda_dependencies
        if dependencies.conda_packages:
            raise UserInputError(f"environment {self.name!r} asks for conda packages "
                                 f"({', '.join(dependencies.conda_packages)}); amlocal images "
                                 "have no conda: ask for them as pip packages")
        return EnvironmentSpec(recipe=self._recipe, pip_packages=tuple(dependencies.pip_packages),
                               base_image=self.docker.base_image,
                               dockerfile=self.docker.base_dockerfile)
