"""The one place that connects to the Docker engine."""

import shutil

import docker
import docker.errors
import requests.exceptions

from amlocal.errors import EngineUnavailableError

START_HINT = (
    "start one (e.g. `sudo systemctl start docker`, or `sudo dockerd &` where there is no "
    "systemd) or run without Docker with --executor process")


def connect(timeout=60):
    """A docker-py client for the engine named by DOCKER_HOST (default: the local socket).

    Raises EngineUnavailableError, with what to do about it, when the engine does not answer.
    """
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise EngineUnavailableError(f"Docker engine does not answer ({reason}): {START_HINT}") from None
    return client


def engine_answers():
    try:
        connect(timeout=5).close()
    except EngineUnavailableError:
        return False
    return True


# What a host needs for --gpu with Docker, by the package names of the distributions that NVIDIA's
# repository serves (the package is called the same in each).
GPU_SUPPORT_HINT = (
    "install the NVIDIA Container Toolkit, package nvidia-container-toolkit from NVIDIA's "
    "repository (Debian/Ubuntu: `sudo apt-get install nvidia-container-toolkit`; Fedora/RHEL: "
    "`sudo dnf install nvidia-container-toolkit`; openSUSE: `sudo zypper install "
    "nvidia-container-toolkit`; see https://docs.nvidia.com/datacenter/cloud-native/"
    "container-toolkit/latest/install-guide.html), then `sudo nvidia-ctk runtime configure "
    "--runtime=docker` and restart Docker; or run with --executor process (the run then uses "
    "the GPU that CuPy sees)")


def has_nvidia_runtime(client):
    """Whether containers of this engine can be given NVIDIA GPUs (the NVIDIA Container Toolkit:
    an "nvidia" runtime, or the hook that serves `--gpus` requests)."""
    runtimes = client.info().get("Runtimes") or {}
    return "nvidia" in runtimes or any(shutil.which(tool) for tool in (
        "nvidia-container-runtime-hook", "nvidia-container-cli"))
