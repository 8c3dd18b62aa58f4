"""The image recipes in docker/, which both backends build from: where they are, which have a GPU
build; what Azure ML's own base images and conda specifications become here.

The local backend builds a recipe's Dockerfile on this host (local/images.py); the Azure backend
hands the same Dockerfile to Azure ML's image build (azure/translate_v1.py).
"""

import re
from pathlib import Path

from amlocal.errors import AmlocalError, UserInputError

# The recipe an environment is built on when its pip packages ask for what the recipe builds
# itself: {recipe: (package, the one version it builds)}. Chainer 7.8.1 needs NumPy < 2, which a
# plain `pip install chainer==7.8.1` does not give.
RECIPE_PACKAGES = {"chainer": ("chainer", "7.8.1")}
DEFAULT_RECIPE = "python"
# Recipes with a GPU build (CuPy on CUDA), used when a run asks for GPUs and its node has real
# ones: {recipe: its GPU build}.
GPU_RECIPES = {"chainer": "chainer-gpu"}


def recipes_root():
    """docker/ of a source checkout (editable install), or its copy in an installed wheel
    (amlocal/recipes, beside amlocal/backends)."""
    import_root = Path(__file__).resolve().parent.parent
    for candidate in (import_root / "recipes", import_root / "docker"):
        if candidate.is_dir():
            return candidate
    raise AmlocalError(f"amlocal's image recipes are missing (looked in {import_root})")


def recipe_dir(recipe):
    """The folder of recipe `recipe`; UserInputError naming the known ones if there is none."""
    root = recipes_root()
    folder = root / recipe
    if not (folder / "Dockerfile").is_file():
        known = sorted(p.name for p in root.iterdir() if (p / "Dockerfile").is_file())
        raise UserInputError(f"unknown environment recipe {recipe!r}: known: {', '.join(known)}")
    return folder


def gpu_build(recipe):
    """The recipe's GPU build, or None where it has none."""
    return GPU_RECIPES.get(recipe)


# Azure ML's base images (the default one and the curated ones' bases) live in a registry that is
# not reachable here, and are Ubuntu with conda: they are built on amlocal's local base instead,
# and the build log says so and what differs.
AZURE_IMAGE_PREFIX = "mcr.microsoft.com/azureml/"
LOCAL_BASE = ("amlocal's local base (python:3.11-slim-bookworm, or amlocal/base:bookworm where no "
              "registry is reachable: Debian 12, Python 3.11)")
# The Python of the local base (Debian 12's, and python:3.11-slim's).
LOCAL_PYTHON_VERSION = "3.11"
# What Azure's image names say about them, and how each reads in the build log.
_IMAGE_FACTS = ((re.compile(r"ubuntu(\d+\.\d+)"), "Ubuntu {} there, Debian 12 here"),
                (re.compile(r"openmpi(\d[\d.]*)"), "Open MPI {} there, no MPI here"),
                (re.compile(r"intelmpi(\d[\d.]*)"), "Intel MPI {} there, no MPI here"),
                (re.compile(r"cuda(\d[\d.]*)"), "CUDA {} there, no CUDA here"))
# Conda specification entries that are the environment's tools, not packages to install.
_CONDA_TOOLS = ("python", "pip")


def is_azure_base_image(image):
    """Whether `image` is one of Azure ML's own base images (None: Azure's default one)."""
    return image is None or image.startswith(AZURE_IMAGE_PREFIX)


def azure_base_image_notes(image, python_version=None):
    """The build log's lines for an environment on Azure's base image `image`, built here on the
    local base; `python_version`: the one its conda specification asks for, if any."""
    differences = [template.format(found.group(1)) for pattern, template in _IMAGE_FACTS
                   if (found := pattern.search(image or ""))]
    if python_version:
        differences.append(f"Python {python_version} there (the conda specification's), "
                           f"the base's {LOCAL_PYTHON_VERSION} here")
    differences.append("no conda here: pip packages go into a virtual environment")
    return [f"Azure's base image {image or '(the default)'} cannot be pulled here: the "
            f"environment is built on {LOCAL_BASE}.", f"What differs: {'; '.join(differences)}."]


def package_name(entry):
    """A conda or pip requirement's name: `conda-forge::numpy=1.21` -> `numpy`."""
    return re.split(r"[\s=<>!~\[;@]", entry.split("::")[-1].strip(), maxsplit=1)[0].lower()


def conda_specification_parts(document):
    """(python version or None, conda-only packages, pip entries) of a conda specification (the
    parsed YAML, or azureml-core's condaDependencies object); ValueError when it is malformed."""
    if not isinstance(document, dict):
        raise ValueError("a conda specification must be a mapping (name, channels, dependencies)")
    dependencies = document.get("dependencies") or []
    if not isinstance(dependencies, list):
        raise ValueError("the conda specification's dependencies must be a list")
    version, conda_only, pip = None, [], []
    for entry in dependencies:
        if isinstance(entry, dict):
            listed = entry.get("pip") or []
            if not isinstance(listed, list):
                raise ValueError("the conda specification's pip entry must be a list")
            pip += [str(item).strip() for item in listed if str(item).strip()]
        elif package_name(str(entry)) == "python":
            version = str(entry).split("=", 1)[1].lstrip("=") if "=" in str(entry) else None
        elif package_name(str(entry)) not in _CONDA_TOOLS:
            conda_only.append(str(entry))
    return version, conda_only, pip


def recipe_for(name, recipe, pip_packages):
    """(recipe, pip packages, build-log note or None) of environment `name` on `recipe` asking
    for `pip_packages`: the default recipe gives way to one that builds a package asked for,
    which leaves the pip packages; UserInputError when the version asked for is not the
    recipe's, or a requirement is malformed."""
    from packaging.requirements import InvalidRequirement, Requirement

    if recipe != DEFAULT_RECIPE:
        return recipe, tuple(pip_packages), None
    for candidate, (package, version) in RECIPE_PACKAGES.items():
        asked = [entry for entry in pip_packages if package_name(entry) == package]
        if not asked:
            continue
        for entry in asked:
            try:
                specifier = Requirement(entry).specifier
            except InvalidRequirement:
                raise UserInputError(f"environment {name!r}: {entry!r} is not a pip "
                                     "requirement") from None
            if not specifier.contains(version, prereleases=True):
                raise UserInputError(f"environment {name!r} asks for {entry}: amlocal builds "
                                     f"{package} {version} only (docker/{candidate}); ask for "
                                     f"{package}=={version}")
        note = (f"The pip packages ask for {package}: built on amlocal's {candidate} recipe, "
                f"which installs {package}=={version} (see docker/{candidate}).")
        return candidate, tuple(entry for entry in pip_packages if entry not in asked), note
    return recipe, tuple(pip_packages), None
