"""The GPU image (docker/chainer-gpu) builds where no registry answers, and checks out with no GPU.

Its CUDA libraries come from PyPI wheels, so it builds on the same local base as the CPU recipes;
`amlocal run --recipe chainer-gpu` without --gpu runs trainer/gpu_image_check.py in it on any host.
The first build downloads ~540 MB of wheels and takes about 2 minutes here (2 cores); later runs
find the image by its tag.
"""

import uuid

import pytest
from click.testing import CliRunner

from amlocal.backends.local import engine
from amlocal.backends.local.compute import host_resources
from amlocal.backends.local.images import (
    DEBIAN_BASE_IMAGE,
    PUBLIC_BASE_IMAGE,
    local_image,
    recipe_default_base,
    recipe_files,
    resolve_base_image,
)
from amlocal.backends.recipes import recipe_dir
from amlocal.cli.main import cli
from conftest import TRAINER_DIR

CUDA_BASE_IMAGE = "nvidia/cuda:11.8.0-runtime-ubuntu22.04"
NO_GPU = pytest.mark.skipif(bool(host_resources().gpus), reason="this host has a GPU")


def invoke(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args], catch_exceptions=False)


def test_the_gpu_recipe_names_nvidia_cuda_as_its_own_base_and_the_cpu_one_the_public_default():
    assert recipe_default_base(recipe_files(recipe_dir("chainer-gpu"))) == CUDA_BASE_IMAGE
    assert recipe_default_base(recipe_files(recipe_dir("chainer"))) == PUBLIC_BASE_IMAGE
    assert recipe_default_base([("Dockerfile", b"FROM scratch\n")]) is None


@pytest.mark.docker
def test_a_recipes_own_base_is_used_when_it_is_on_this_machine(docker_client):
    local_base = resolve_base_image(docker_client)[0]
    stand_in = f"amlocal-test/cuda-stand-in:{uuid.uuid4().hex[:12]}"
    repository, tag = stand_in.split(":")
    docker_client.images.get(local_base).tag(repository, tag)
    try:
        name, image_id = resolve_base_image(docker_client, preferred=stand_in)
        assert (name, image_id) == (stand_in, docker_client.images.get(stand_in).id)
    finally:
        docker_client.images.remove(stand_in)


@pytest.mark.docker
def test_without_its_own_base_or_a_registry_a_recipe_builds_on_the_local_base(docker_client):
    missing = f"amlocal-test/no-such-base:{uuid.uuid4().hex[:12]}"  # no registry serves it

    name, _ = resolve_base_image(docker_client, preferred=missing)

    assert name in (PUBLIC_BASE_IMAGE, DEBIAN_BASE_IMAGE)


@pytest.mark.docker
@NO_GPU
def test_the_gpu_image_builds_offline_and_passes_its_no_gpu_check(amlocal_home, docker_client):
    result = invoke("run", TRAINER_DIR, "--script", "gpu_image_check.py", "--executor", "docker",
                    "--recipe", "chainer-gpu")

    output, events = result.stdout, result.stderr  # the script's output; the run's stages
    assert result.exit_code == 0, output + events
    preparing = next(line for line in events.splitlines()
                     if line.startswith("[Preparing] Completed"))
    if local_image(docker_client, CUDA_BASE_IMAGE) is None:
        assert any(f"(base {base})" in preparing for base in (PUBLIC_BASE_IMAGE, DEBIAN_BASE_IMAGE))
    if "built" in preparing:  # not found in cache: the build log says how big the image is
        assert "Built image amlocal/chainer-gpu:" in events and " MB" in events
    passed = [line for line in output.splitlines() if line.startswith("ok   ")]
    for check in ("libcudart.so.11.0: /opt/venv/", "(nvidia-cuda-runtime-cu11 11.8.",
                  "libcublas.so.11: /opt/venv/", "libnvrtc.so.11.2: /opt/venv/",
                  "CuPy 13.6.0 imports, built for CUDA 11.8",
                  "NVRTC 11.8 compiles fast_gpu.py's 9 kernels to",
                  "Chainer 7.8.1 imports with CuPy available"):
        assert any(check in line for line in passed), check
    assert "FAIL" not in output and "Warning" not in output + events
    gpu_lines = [line for line in output.splitlines() if line.startswith("GPU:")]
    assert gpu_lines == [gpu_lines[0]] and gpu_lines[0].startswith("GPU: none (no CUDA driver")


@pytest.mark.docker
@NO_GPU
def test_gpu_with_the_gpu_recipe_on_a_host_without_one_is_refused_before_any_build(
        amlocal_home, docker_client):
    result = invoke("run", TRAINER_DIR, "--script", "gpu_image_check.py", "--executor", "docker",
                    "--recipe", "chainer-gpu", "--gpu")

    assert result.exit_code == 2
    assert "asks for a GPU" in result.stderr and result.stderr.count("\n") == 1
    assert "[Preparing]" not in result.stdout + result.stderr


@pytest.mark.docker
@NO_GPU
def test_an_engine_without_gpu_support_is_told_which_package_to_install(amlocal_home,
                                                                         docker_client):
    if engine.has_nvidia_runtime(docker_client):
        pytest.skip("this engine can give containers GPUs")
    created = invoke("compute", "create", "gpu", "--vm-size", "STANDARD_NC6", "--max-nodes", 1,
                     "--emulate-gpus", "--allow-overcommit")
    assert created.exit_code == 0, created.stderr

    result = invoke("run", TRAINER_DIR, "--script", "gpu_image_check.py", "--executor", "docker",
                    "--recipe", "chainer-gpu", "--gpu", "--compute", "gpu")

    assert result.exit_code != 0
    assert "cannot give containers GPUs" in result.stdout + result.stderr
    for hint in ("sudo apt-get install nvidia-container-toolkit",
                 "sudo dnf install nvidia-container-toolkit",
                 "nvidia-ctk runtime configure --runtime=docker"):
        assert hint in result.stdout + result.stderr
