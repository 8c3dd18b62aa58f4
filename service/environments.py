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
from amlocal.backends.recipes import (LOCAL_BASE, azure_base_image_notes,
                                      conda_specification_parts, is_azure_base_image, recipe_for)
from amlocal.errors import UserInputError
from amlocal.service.errors import bad_request

RECIPE = "python"
CURATED_PREFIX = "AzureML-"
# pip options that choose an index: builds here use this host's pip settings instead.
_INDEX_OPTIONS = ("--index-url", "-i", "--extra-index-url", "--find-links", "-f")
_PASSED_OPTIONS = ("--pre", "--prefer-binary")
_INTERPRETERS = ("python", "python3")
_BASE_IMAGE_ARG = re.compile(r"^\s*ARG\s+BASE_IMAGE(?:=(\S+))?\s*$", re.MULTILINE | re.IGNORECASE)


@dataclass(frozen=True)
class LocalEnvironment:
    """What the definition's environment becomes: the spec, the executor, the variables."""

    spec: EnvironmentSpec
    executor: str
    variables: dict


def _conda_parts(python):
    """(python version or None, conda-only packages, pip entries) of the conda specification."""
    try:
        return conda_specification_parts(python.get("condaDependencies") or {})
    except ValueError as error:
        raise bad_request(f"environment.python.condaDependencies: {error}") from None


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
    azure_image = is_azure_base_image(image)
    version, conda_only, pip = _conda_parts(python)
    notes = [f"Environment {name!r} (version {environment.get('version') or 'unregistered'})"
             + (", a curated Azure ML environment" if name.startswith(CURATED_PREFIX) else "")]

    if user_managed and dockerfile is None and azure_image and not use_docker:
        notes.append("User-managed dependencies on Azure's base image with Docker off: the "
                     "script runs in this host's Python (amlocal's process executor) with what "
                     "is installed there; no image is built.")
        return LocalEnvironment(EnvironmentSpec(recipe=RECIPE, build_notes=tuple(notes)),
                                "process", dict(variables))
    packages, recipe = (), RECIPE
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
        if dockerfile is None:
            try:
                recipe, packages, note = recipe_for(name, RECIPE, packages)
            except UserInputError as error:
                raise bad_request(str(error)) from None
            notes += [note] if note else []
    if dockerfile is not None:
        notes.append("A Dockerfile environment: its Dockerfile is built as written.")
        notes += _dockerfile_base_notes(dockerfile)
    elif azure_image:
        notes += azure_base_image_notes(image, version)
        image = None
    return LocalEnvironment(
        EnvironmentSpec(recipe=recipe, pip_packages=packages, base_image=image,
                        dockerfile=dockerfile, build_notes=tuple(notes)),
        "docker", dict(variables))
