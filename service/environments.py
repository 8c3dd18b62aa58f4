"""A run definition's environment (azureml-core's serialized `Environment`), as the local
environment the local backend builds.

On Azure, an environment is a base image plus a conda environment made from its conda
specification. Here it is amlocal's `python` recipe (docker/python) on a local base:

* Azure's own base images (`mcr.microsoft.com/azureml/...`, the default and the curated ones)
  cannot be pulled here: they map to amlocal's local base, and the run's build log says so and
  what differs (the OS, the Python version the conda specification asks for, conda, MPI, CUDA);
* any other base image (`Environment.from_docker_image`) is used as it is;
* a Dockerfile environment (`environment.docker.base_dockerfile`) is built as written, its
  `ARG BASE_IMAGE` given amlocal's local base (with this host's pip settings as its global pip
  configuration, images.pip_configured_base), as Azure's base images map to it;
* the conda specification's pip packages are installed with pip (there is no conda here): a
  conda-only package is refused in one line naming it, `python=X` and `pip` are not packages to
  install; with `python.user_managed_dependencies` nothing is installed, as on Azure.

A definition that manages its own Python on Azure's default image with Docker off (the SDK's way
of saying "run on the compute's own Python") runs with amlocal's process executor: in this host's
Python, with what is installed there.
"""

import re
from dataclasses import dataclass

from amlocal.backends.base import EnvironmentSpec
from amlocal.service.errors import bad_request

RECIPE = "python"
AZURE_IMAGE_PREFIX = "mcr.microsoft.com/azureml/"
LOCAL_BASE = ("amlocal's local base (python:3.11-slim-bookworm, or amlocal/base:bookworm where no "
              "registry is reachable: Debian 12, Python 3.11)")
CURATED_PREFIX = "AzureML-"
# Conda specification entries that are the environment's tools, not packages to install.
_CONDA_TOOLS = ("python", "pip")
# pip options that choose an index: builds here use this host's pip settings instead.
_INDEX_OPTIONS = ("--index-url", "-i", "--extra-index-url", "--find-links", "-f")
_PASSED_OPTIONS = ("--pre", "--prefer-binary")
_INTERPRETERS = ("python", "python3")
_BASE_IMAGE_ARG = re.compile(r"^\s*ARG\s+BASE_IMAGE(?:=(\S+))?\s*$", re.MULTILINE | re.IGNORECASE)
# What Azure's image names say about them, and how each reads in the build log.
_IMAGE_FACTS = ((re.compile(r"ubuntu(\d+\.\d+)"), "Ubuntu {} there, Debian 12 here"),
                (re.compile(r"openmpi(\d[\d.]*)"), "Open MPI {} there, no MPI here"),
                (re.compile(r"intelmpi(\d[\d.]*)"), "Intel MPI {} there, no MPI here"),
                (re.compile(r"cuda(\d[\d.]*)"), "CUDA {} there, no CUDA here"))


@dataclass(frozen=True)
class LocalEnvironment:
    """What the definition's environment becomes: the spec, the executor, the variables."""

    spec: EnvironmentSpec
    executor: str
    variables: dict


def _package_name(entry):
    """A conda or pip requirement's name: `conda-forge::numpy=1.21` -> `numpy`."""
    return re.split(r"[\s=<>!~\[;@]", entry.split("::")[-1].strip(), maxsplit=1)[0].lower()


def _conda_parts(python):
    """(python version or None, conda-only packages, pip entries) of the conda specification."""
    conda = python.get("condaDependencies") or {}
    if not isinstance(conda, dict):
        raise bad_request("environment.python.condaDependencies must be an object")
    version, conda_only, pip = None, [], []
    for entry in conda.get("dependencies") or []:
        if isinstance(entry, dict):
            listed = entry.get("pip") or []
            if not isinstance(listed, list):
                raise bad_request("the conda specification's pip entry must be a list")
            pip += [str(item).strip() for item in listed if str(item).strip()]
        elif _package_name(str(entry)) == "python":
            version = str(entry).split("=", 1)[1].lstrip("=") if "=" in str(entry) else None
        elif _package_name(str(entry)) not in _CONDA_TOOLS:
            conda_only.append(str(entry))
    return version, conda_only, pip


def _pip_requirements(name, pip, notes):
    """The pip entries to install: packages, and the few options that mean the same here."""
    requirements, dropped = [], []
    for entry in pip:
        if not entry.startswith("-"):
            requirements.append(entry)
        elif entry.split()[0].split("=")[0] in _INDEX_OPTIONS:
            dropped.append(entry)
        elif entry in _PASSED_OPTIONS:
            requirements.append(entry)
        else:
            raise bad_request(f"environment {name!r}: the pip option {entry!r} is not emulated "
                              f"(amlocal passes on only {', '.join(_PASSED_OPTIONS)})")
    if dropped:
        notes.append(f"The environment's pip index options ({'; '.join(dropped)}) are not used: "
                     "builds here use this host's pip settings (index, proxy, CA bundle).")
    return requirements


def _azure_image_notes(image, python_version):
    differences = [template.format(found.group(1)) for pattern, template in _IMAGE_FACTS
                   if (found := pattern.search(image))]
    if python_version:
        differences.append(f"Python {python_version} there (the conda specification's), "
                           "the base's 3.11 here")
    differences.append("no conda here: pip packages go into a virtual environment")
    return [f"Azure's base image {image} cannot be pulled here: the environment is built on "
            f"{LOCAL_BASE}.", f"What differs: {'; '.join(differences)}."]


def _dockerfile_base_notes(dockerfile):
    declared = _BASE_IMAGE_ARG.search(dockerfile)
    if declared is None:
        return ["Its FROM lines name their images themselves (no ARG BASE_IMAGE): they must be "
                "on this machine, as no registry is pulled from."]
    return [f"Its base image (ARG BASE_IMAGE, {declared.group(1) or 'no default'} on Azure) is "
            f"{LOCAL_BASE} here, given as the build argument BASE_IMAGE, with this host's pip "
            "settings (index, proxy, CA bundle) as the base's global pip configuration."]


def _refuse_unsupported(name, python, docker):
    for key in ("condaDependenciesFile", "baseCondaEnvironment"):
        if python.get(key):
            raise bad_request(f"environment {name!r}: python.{key} is not emulated: give the "
                              "packages in the conda specification's pip list")
    interpreter = python.get("interpreterPath") or "python"
    if interpreter not in _INTERPRETERS:
        raise bad_request(f"environment {name!r}: python.interpreterPath {interpreter!r} is not "
                          "emulated: the image's (or this host's) python runs the script")
    registry = docker.get("baseImageRegistry") or {}
    if isinstance(registry, dict) and registry.get("address"):
        raise bad_request(f"environment {name!r}: pulling from the private registry "
                          f"{registry['address']!r} is not emulated: pull or build the image on "
                          "this machine and name it without a registry")
    if docker.get("buildContext"):
        raise bad_request(f"environment {name!r}: docker.buildContext is not emulated: give the "
                          "Dockerfile's text (Environment.from_dockerfile)")
    platform = docker.get("platform") or {}
    if isinstance(platform, dict) and (platform.get("os") or "Linux").lower() != "linux":
        raise bad_request(f"environment {name!r}: the {platform.get('os')} platform is not "
                          "emulated: amlocal runs Linux containers")


def local_environment(environment, use_docker=False):
    """The LocalEnvironment of a definition's `environment` object (`use_docker`: the run
    configuration's docker.useDocker); ServiceError 400 naming what cannot be had here."""
    if not isinstance(environment, dict):
        raise bad_request("the run configuration's environment must be an object")
    name = str(environment.get("name") or "")
    python = environment.get("python") or {}
    docker = environment.get("docker") or {}
    if not isinstance(python, dict) or not isinstance(docker, dict):
        raise bad_request(f"environment {name!r}: python and docker must be objects")
    if environment.get("r"):
        raise bad_request(f"environment {name!r}: R environments are not emulated")
    _refuse_unsupported(name, python, docker)
    variables = environment.get("environmentVariables") or {}
    if not isinstance(variables, dict):
        raise bad_request(f"environment {name!r}: environmentVariables must be an object")
    user_managed = bool(python.get("userManagedDependencies"))
    image = docker.get("baseImage") or None
    dockerfile = docker.get("baseDockerfile") or None
    azure_image = image is None or image.startswith(AZURE_IMAGE_PREFIX)
    version, conda_only, pip = _conda_parts(python)
    notes = [f"Environment {name!r} (version {environment.get('version') or 'unregistered'})"
             + (", a curated Azure ML environment" if name.startswith(CURATED_PREFIX) else "")]

    if user_managed and dockerfile is None and azure_image and not use_docker:
        notes.append("User-managed dependencies on Azure's base image with Docker off: the "
                     "script runs in this host's Python (amlocal's process executor) with what "
                     "is installed there; no image is built.")
        return LocalEnvironment(EnvironmentSpec(recipe=RECIPE, build_notes=tuple(notes)),
                                "process", dict(variables))
    packages = ()
    if user_managed:
        notes.append("User-managed dependencies: the image's own Python runs the script; the "
                     "conda specification is not installed (as on Azure).")
    else:
        if conda_only:
            raise bad_request(f"environment {name!r} asks for conda packages "
                              f"({', '.join(conda_only)}) that amlocal cannot install (its "
                              "images have no conda): ask for them as pip packages")
        if dockerfile is not None and pip:
            raise bad_request(f"environment {name!r}: a Dockerfile environment whose pip "
                              "packages Azure would add in a conda layer is not emulated: set "
                              "python.user_managed_dependencies=True and install them in the "
                              "Dockerfile")
        packages = tuple(_pip_requirements(name, pip, notes))
    if dockerfile is not None:
        notes.append("A Dockerfile environment: its Dockerfile is built as written.")
        notes += _dockerfile_base_notes(dockerfile)
    elif azure_image:
        notes += _azure_image_notes(image or "(none)", version)
        image = None
    return LocalEnvironment(
        EnvironmentSpec(recipe=RECIPE, pip_packages=packages, base_image=image,
                        dockerfile=dockerfile, build_notes=tuple(notes)),
        "docker", dict(variables))
