"""The Dockerfile Azure ML builds a run's (or a service's) environment from, whichever SDK sends
it: the local recipe's docker/<recipe>/Dockerfile (or the user's own) made self-contained, since
Azure builds it from its text alone. translate_v1.py (azureml-core) and translate_v2.py
(azure-ai-ml) both take their environment from here; neither SDK is imported.

What changes against the local build:

* the `COPY amlocal-pip/` line (the host's pip settings, which may carry credentials) becomes an
  empty pip configuration;
* the `COPY requirements.txt` line writes the run's pip packages in place;
* an explicit base image becomes the `BASE_IMAGE` default (one that exists only on this machine,
  made by `amlocal base-image build`, is refused: Azure cannot pull it);
* azureml-core is installed last, so that the script's `Run.get_context()` reaches Azure ML's
  run history (a v2 command job writes to the same run history).
"""

import re
import shlex
from dataclasses import replace

from amlocal.backends.azure.errors import TranslationError
from amlocal.backends.recipes import gpu_build, recipe_dir

ENVIRONMENT_PREFIX = "amlocal-"
# What the image needs for Run.get_context() to reach run history on Azure (SDK v1's last line).
RUN_HISTORY_REQUIREMENT = "azureml-core~=1.61.0"
# Images that exist only on the machine that made them (`amlocal base-image build`).
_LOCAL_ONLY_IMAGE_PREFIX = "amlocal/"

_COPY_PIP_SETTINGS = re.compile(r"^COPY\s+amlocal-pip/?\s+(\S+?)/?\s*$", re.MULTILINE)
_COPY_REQUIREMENTS = re.compile(r"^COPY\s+requirements\.txt\s+(\S+)\s*$", re.MULTILINE)
_BASE_IMAGE_ARG = re.compile(r"^ARG\s+BASE_IMAGE(=\S*)?\s*$", re.MULTILINE)


def recipe_dockerfile_text(recipe):
    """The text of docker/<recipe>/Dockerfile, as the local backend builds from it."""
    return (recipe_dir(recipe) / "Dockerfile").read_text()


def azure_dockerfile(dockerfile, pip_packages=(), base_image=None):
    """The Dockerfile Azure builds: `dockerfile` (the local recipe's or the user's text) made
    self-contained, with azureml-core added for run history. See the module docstring."""
    if base_image:
        if base_image.startswith(_LOCAL_ONLY_IMAGE_PREFIX):
            raise TranslationError(
                f"base image {base_image} exists only on this machine (amlocal made it): Azure "
                "cannot pull it; leave --base-image out to use the recipe's public base, or push "
                "the image to a registry Azure can reach and name it there")
        if not _BASE_IMAGE_ARG.search(dockerfile):
            raise TranslationError(f"the Dockerfile has no `ARG BASE_IMAGE` line, so base image "
                                   f"{base_image} cannot be applied to it")
        dockerfile = _BASE_IMAGE_ARG.sub(f"ARG BASE_IMAGE={base_image}", dockerfile)
    dockerfile = _COPY_PIP_SETTINGS.sub(
        lambda match: (f"# amlocal: the host's pip settings stay on the host; Azure's build uses "
                       f"its own\nRUN mkdir -p {match.group(1)} && : > {match.group(1)}/pip.conf"),
        dockerfile)
    requirements = " ".join(shlex.quote(package) for package in pip_packages)
    dockerfile = _COPY_REQUIREMENTS.sub(
        lambda match: ("# amlocal: the run's pip packages (requirements.txt of the local build)\n"
                       + (f"RUN printf '%s\\n' {requirements} > {match.group(1)}" if requirements
                          else f"RUN : > {match.group(1)}")),
        dockerfile)
    return (dockerfile.rstrip("\n") + "\n\n"
            "# amlocal: Run.get_context() reaches Azure ML run history through azureml-core\n"
            f"RUN python -m pip install --no-cache-dir {shlex.quote(RUN_HISTORY_REQUIREMENT)}\n")


def environment_dockerfile(environment_spec, extra_packages=(), suffix=""):
    """(environment name, Dockerfile text) for an EnvironmentSpec: from docker/<recipe>/Dockerfile,
    or the spec's own Dockerfile; `extra_packages` join the spec's pip packages (a service's
    inference server), `suffix` ends the name ("-inference")."""
    own = environment_spec.dockerfile is not None
    dockerfile = azure_dockerfile(
        environment_spec.dockerfile if own else recipe_dockerfile_text(environment_spec.recipe),
        (*environment_spec.pip_packages, *extra_packages), environment_spec.base_image)
    name = ENVIRONMENT_PREFIX + ("custom" if own else environment_spec.recipe) + suffix
    return name, dockerfile


def gpu_environment(spec, local_target=None):
    """The run's EnvironmentSpec, with the recipe's GPU build where the run asks for GPUs (as the
    local backend chooses it for nodes with real GPUs: Azure's GPU sizes have real ones)."""
    environment = spec.environment
    gpu_recipe = gpu_build(environment.recipe)
    if (spec.use_gpu and environment.dockerfile is None and gpu_recipe
            and (local_target is None or local_target.size.gpus > 0)):
        return replace(environment, recipe=gpu_recipe)
    return environment
