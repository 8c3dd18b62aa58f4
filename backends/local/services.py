"""Web services on this machine: a registered model behind an entry script, in Docker.

A service is two containers, both of the image its environment builds (images.py, cached as run
images are):
  * the scoring container runs amlocal's scoring server (runtime/amlocal_score_server.py: Azure
    ML's inference-server contract) on the user's entry script, with no network at all; it
    listens on a Unix socket in a folder shared with
  * the relay container (runtime/amlocal_score_relay.py), on a user-defined bridge network
    (the engine may have no default bridge), its port published on the host's 127.0.0.1 only.
So the service is reachable from this machine alone and the user's code reaches nothing.

Layout under $AMLOCAL_HOME/services/<name>/:
    app/                        a copy of the source folder, mounted read-only at /var/azureml-app
    app/azureml-models/<m>/<v>  mount points of the registered models (read-only)
    auth/keys.json              the keys, when authentication is on (re-read on every request)
    socket/                     the scoring server's socket, shared with the relay

The record (backends/history/services.py) outlives the process that deployed the service; the
state is what the containers say when asked: Transitioning until the server answers, Healthy,
then Unhealthy if its container dies; Failed when it never answered (an init() that raised).
"""

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import time
import urllib.error
import urllib.request
from dataclasses import asdict
from pathlib import Path

from amlocal.backends.base import EnvironmentSpec
from amlocal.backends.history import services as records
from amlocal.backends.history.services import (FAILED, HEALTHY, TRANSITIONING, UNHEALTHY,
                                               ServiceRecords, validate_service_name)
from amlocal.backends.history.snapshot import take_snapshot
from amlocal.backends.history.store import RunStore
from amlocal.backends.registries import HistoryModelRegistry
from amlocal.backends.local.run_settings import PIDS_LIMIT
from amlocal.backends.local.service_settings import (APP_ROOT, MODELS_FOLDER, base_url,
                                                     checked_resources, checked_source,
                                                     model_dir_variable, model_mount, new_keys,
                                                     scoring_uri)
from amlocal.errors import AmlocalError, UserInputError

KINDS = ("Local", "ACI", "AKS")
SERVICE_LABEL = "amlocal.service"
HOME_LABEL = "amlocal.home"  # the run history a service's containers belong to
ROLE_LABEL = "amlocal.service_role"
NETWORK = "amlocal-services"
RELAY_PORT = 5001  # the inference server's port in Azure's images
RUNTIME_DIR = Path(__file__).resolve().parent / "runtime"
_IN_CONTAINER_RUNTIME = "/opt/amlocal-score"
_IN_CONTAINER_SOCKET_DIR = "/var/run/amlocal-score"
_IN_CONTAINER_AUTH_DIR = "/var/azureml-auth"
SOCKET_NAME = "score.sock"
SERVICES_FOLDER = "services"
_HEALTH_TIMEOUT_S = 2


class ServiceError(AmlocalError):
    """A service could not be deployed, changed or reached."""


@contextlib.contextmanager
def _engine_refusals(doing):
    """The Docker engine's refusals (a port in use, an engine gone) as one-line ServiceErrors."""
    import docker.errors
    import requests.exceptions

    try:
        yield
    except docker.errors.APIError as error:
        reason = (error.explanation or str(error)).splitlines()[0]
        raise ServiceError(f"could not {doing}: the Docker engine says {reason}") from None
    except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
        raise ServiceError(f"could not {doing}: {str(error).splitlines()[0]}") from None


class LocalServices:
    """The web services of one run history, run by the local Docker engine."""

    def __init__(self, home=None, docker_client=None):
        self.store = RunStore(home)
        self.records = ServiceRecords(self.store)
        self._client = docker_client

    @property
    def client(self):
        if self._client is None:
            from amlocal.backends.local import engine

            self._client = engine.connect()
        return self._client

    def folder(self, name):
        return Path(self.store.home) / SERVICES_FOLDER / name

    # -- deploying ------------------------------------------------------------------------------

    def deploy(self, name, models, entry_script, source_dir, *, kind="Local", environment=None,
               port=None, cpu_cores=None, memory_gb=None, auth_enabled=False, env_vars=None,
               tags=None, description=None, overwrite=False, on_line=lambda line: None):
        """Build (or find) the image, start the service's containers; return its record.

        `models` are (name, version) pairs of registered models (version None: the latest).
        The record comes back in state Transitioning: `wait` follows it to Healthy or Failed.
        """
        validate_service_name(name)
        if kind not in KINDS:
            raise UserInputError(f"unknown service kind {kind!r}: one of {', '.join(KINDS)}")
        settings = {"models": self._resolve_models(models),
                    **checked_source(entry_script, source_dir),
                    "environment": asdict(environment or EnvironmentSpec()),
                    **checked_resources(port, cpu_cores, memory_gb),
                    "auth_enabled": bool(auth_enabled), "env_vars": dict(env_vars or {})}
        if self.records.exists(name) and not overwrite:
            raise records.ServiceExistsError(
                f"a service named {name!r} already exists (delete it, or deploy with overwrite)")
        image = self._ensure_image(settings["environment"], on_line)
        if overwrite and self.records.exists(name):
            self.delete(name)  # only once the new image is there: a failed build keeps the old
        keys = new_keys() if auth_enabled or kind != "Local" else {}
        self.records.create(name, kind, settings, keys=keys, image=image, tags=tags or {},
                            description=description)
        try:
            self._write_folder(name, settings, keys)
            with _engine_refusals(f"start service {name!r}"):
                relay = self._start_relay(name, image, settings["port"])
                scorer = self._start_scorer(name, image, settings)
                port = _published_port(relay)
        except BaseException:
            self.delete(name)  # containers, files and record: nothing is left half-made
            raise
        on_line(f"service {name}: scoring container {scorer.short_id}, relay {relay.short_id}")
        return self.records.update(name, scorer_id=scorer.id, relay_id=relay.id, port=port)

    def _resolve_models(self, models):
        registry = HistoryModelRegistry(self.store)
        resolved = []
        for model_name, version in models:
            record = registry.get(model_name, version)
            registry.verified_path(record["name"], record["version"])  # damaged: refused here
            resolved.append({"name": record["name"], "version": record["version"]})
        return resolved

    def _ensure_image(self, environment, on_line):
        from amlocal.backends.local import images

        spec = EnvironmentSpec(**{**environment, "pip_packages": tuple(environment["pip_packages"]),
                                  "build_notes": tuple(environment["build_notes"])})
        prepared = images.ensure_image(self.client, spec.recipe, spec.pip_packages,
                                       spec.base_image, on_line=on_line,
                                       dockerfile=spec.dockerfile)
        return prepared.tag

    def _write_folder(self, name, settings, keys):
        folder = self.folder(name)
        folder.mkdir(parents=True, exist_ok=True)
        self._copy_source(name, settings)
        (folder / "socket").mkdir(exist_ok=True)
        if settings["auth_enabled"]:
            self._write_keys(name, keys)

    def _copy_source(self, name, settings):
        """A fresh snapshot of the source folder (taken as for runs: .amlignore, symlinks inside
        it only, no FIFOs or devices, Azure's size limits), with the models' mount points."""
        app = self.folder(name) / "app"
        staging = app.with_name("app.new")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            take_snapshot(settings["source_dir"], staging)
        except (OSError, UserInputError) as error:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(error, UserInputError):
                raise
            raise ServiceError(f"could not copy the source folder {settings['source_dir']}: "
                               f"{error}") from None
        for model in settings["models"]:
            (staging / MODELS_FOLDER / model["name"] / str(model["version"])).mkdir(
                parents=True, exist_ok=True)
        shutil.rmtree(app, ignore_errors=True)
        os.rename(staging, app)

    def _write_keys(self, name, keys):
        auth = self.folder(name) / "auth"
        auth.mkdir(exist_ok=True)
        staging = auth / ".keys.json.new"
        staging.write_text(json.dumps(keys))
        os.replace(staging, auth / "keys.json")  # the folder is mounted: a rename is seen at once

    def _container_name(self, name):
        # Names are the engine's, shared by every run history on it: the history's own part.
        home = hashlib.sha256(str(self.store.home).encode()).hexdigest()[:8]
        return f"amlocal-service-{name}-{home}"

    def _labels(self, name, role):
        return {SERVICE_LABEL: name, ROLE_LABEL: role, HOME_LABEL: str(self.store.home)}

    def _container_user(self):
        return f"{os.getuid()}:{os.getgid()}"

    def _start_relay(self, name, image, port):
        self._ensure_network()
        folder = self.folder(name)
        return self.client.containers.run(
            image, ["python3", "-I", f"{_IN_CONTAINER_RUNTIME}/amlocal_score_relay.py",
                    str(RELAY_PORT)],
            name=f"{self._container_name(name)}-relay", detach=True, network=NETWORK,
            ports={f"{RELAY_PORT}/tcp": ("127.0.0.1", port)},
            environment={"AMLOCAL_SCORE_SOCKET": f"{_IN_CONTAINER_SOCKET_DIR}/{SOCKET_NAME}"},
            mounts=[_bind(folder / "socket", _IN_CONTAINER_SOCKET_DIR, False),
                    _bind(RUNTIME_DIR, _IN_CONTAINER_RUNTIME, True)],
            labels=self._labels(name, "relay"), user=self._container_user(),
            read_only=True, cap_drop=["ALL"], security_opt=["no-new-privileges"], pids_limit=64)

    def _start_scorer(self, name, image, settings):
        folder = self.folder(name)
        models = settings["models"]
        mounts = [_bind(folder / "app", APP_ROOT, True),
                  _bind(folder / "socket", _IN_CONTAINER_SOCKET_DIR, False),
                  _bind(RUNTIME_DIR, _IN_CONTAINER_RUNTIME, True)]
        registry = HistoryModelRegistry(self.store)
        for model in models:
            mounts.append(_bind(registry.model_dir(model["name"], model["version"]),
                                model_mount(model), True))
        environment = {**settings["env_vars"], "AML_APP_ROOT": APP_ROOT,
                       "AZUREML_ENTRY_SCRIPT": settings["entry_script"],
                       "AZUREML_MODEL_DIR": model_dir_variable(models),
                       "AMLOCAL_SCORE_SOCKET": f"{_IN_CONTAINER_SOCKET_DIR}/{SOCKET_NAME}",
                       "HOME": "/tmp", "PYTHONUNBUFFERED": "1"}
        if settings["auth_enabled"]:
            mounts.append(_bind(folder / "auth", _IN_CONTAINER_AUTH_DIR, True))
            environment["AMLOCAL_KEYS_FILE"] = f"{_IN_CONTAINER_AUTH_DIR}/keys.json"
        limits = {}
        if settings["cpu_cores"]:
            limits["nano_cpus"] = int(settings["cpu_cores"] * 1e9)
        if settings["memory_gb"]:
            limits["mem_limit"] = int(settings["memory_gb"] * 2**30)
        return self.client.containers.run(
            image, ["python", f"{_IN_CONTAINER_RUNTIME}/amlocal_score_server.py"],
            name=self._container_name(name), detach=True, network_mode="none",
            working_dir=APP_ROOT, environment=environment, mounts=mounts,
            labels=self._labels(name, "scorer"), user=self._container_user(),
            cap_drop=["ALL"], security_opt=["no-new-privileges"], pids_limit=PIDS_LIMIT, **limits)

    def _ensure_network(self):
        import docker.errors

        try:
            self.client.networks.get(NETWORK)
        except docker.errors.NotFound:
            try:
                self.client.networks.create(NETWORK, driver="bridge",
                                            labels={SERVICE_LABEL: "network"})
            except docker.errors.APIError:
                self.client.networks.get(NETWORK)  # created meanwhile by another process

    # -- changing -------------------------------------------------------------------------------

    def reload(self, name):
        """Restart the scoring container on a new copy of the source folder (no image build)."""
        record = self.records.get(name)
        self._copy_source(name, record["settings"])
        return self._restart_scorer(record, record["settings"], record["image"])

    def update(self, name, *, models=None, entry_script=None, source_dir=None, environment=None,
               cpu_cores=None, memory_gb=None, auth_enabled=None, env_vars=None, tags=None,
               description=None, on_line=lambda line: None):
        """Change what a service runs (values left None stay); its port and keys stay."""
        record = self.records.get(name)
        settings = dict(record["settings"])
        if models is not None:
            settings["models"] = self._resolve_models(models)
        if entry_script is not None or source_dir is not None:
            settings.update(checked_source(entry_script or settings["entry_script"],
                                            source_dir or settings["source_dir"]))
        resources = checked_resources(settings["port"], cpu_cores or settings["cpu_cores"],
                                       memory_gb or settings["memory_gb"])
        settings.update(resources)
        if auth_enabled is not None:
            settings["auth_enabled"] = bool(auth_enabled)
        if env_vars is not None:
            settings["env_vars"] = dict(env_vars)
        image = record["image"]
        if environment is not None:
            settings["environment"] = asdict(environment)
            image = self._ensure_image(settings["environment"], on_line)
        keys = record["keys"] or (new_keys() if settings["auth_enabled"] else {})
        self.records.update(name, settings=settings, image=image, keys=keys,
                            tags=record["tags"] if tags is None else tags,
                            description=record["description"] if description is None
                            else description)
        self._write_folder(name, settings, keys)
        return self._restart_scorer(record, settings, image)

    def _restart_scorer(self, record, settings, image):
        self._remove_container(record["scorer_id"])
        with _engine_refusals(f"restart service {record['name']!r}"):
            scorer = self._start_scorer(record["name"], image, settings)
        return self.records.update(record["name"], scorer_id=scorer.id, state=TRANSITIONING,
                                   error=None, healthy_at=None)

    def regen_key(self, name, key, set_key=None):
        """New Primary or Secondary key (or `set_key`); the old one stops working at once."""
        if key not in ("Primary", "Secondary"):
            raise UserInputError(f"key must be 'Primary' or 'Secondary', got {key!r}")
        record = self.records.get(name)
        keys = dict(record["keys"] or new_keys())
        keys[f"{key.lower()}Key"] = set_key if set_key else secrets.token_urlsafe(24)
        if record["auth_enabled"]:
            self._write_keys(name, keys)
        return self.records.update(name, keys=keys)

    def delete(self, name):
        """Remove the service's containers, files and record; ServiceNotFoundError if none."""
        record = self.records.get(name)
        for container_id in (record["scorer_id"], record["relay_id"]):
            self._remove_container(container_id)
        for container in self.client.containers.list(all=True, filters={"label": [
                f"{SERVICE_LABEL}={name}", f"{HOME_LABEL}={self.store.home}"]}):
            self._remove_container(container.id)  # one a crashed deploy never recorded
        shutil.rmtree(self.folder(name), ignore_errors=True)
        self.records.delete(name)

    def _remove_container(self, container_id):
        if not container_id:
            return
        import docker.errors

        try:
            self.client.containers.get(container_id).remove(force=True)
        except docker.errors.NotFound:
            pass

    # -- looking ------------------------------------------------------------------------------

    def status(self, name):
        """The service's record with its state as its containers show it now (and recorded)."""
        record = self.records.get(name)
        state, error = self._observed_state(record)
        fields = {"state": state, "error": error}
        if state == HEALTHY and record["healthy_at"] is None:
            fields["healthy_at"] = time.time()
        if (state, error) != (record["state"], record["error"]) or "healthy_at" in fields:
            record = self.records.update(name, **fields)
        return record

    def list(self):
        return [self.status(record["name"]) for record in self.records.list()]

    def _observed_state(self, record):
        was_healthy = record["healthy_at"] is not None
        lost = UNHEALTHY if was_healthy else FAILED
        if record["scorer_id"] is None:
            return record["state"], record["error"]
        scorer = self._container(record["scorer_id"])
        if scorer is None:
            return lost, "the scoring container is gone (removed outside amlocal?)"
        container_state = scorer.attrs["State"]
        if container_state["Status"] != "running":
            oom = " (out of memory)" if container_state.get("OOMKilled") else ""
            what = "stopped" if was_healthy else "exited before it served: init() failed?"
            return lost, (f"the scoring container {what}: exit code "
                          f"{container_state.get('ExitCode')}{oom}; see the service's logs")
        relay = self._container(record["relay_id"])
        if relay is None or relay.attrs["State"]["Status"] != "running":
            return lost, "the service's relay container is not running"
        if self._answers(record):
            return HEALTHY, None
        return (UNHEALTHY, "the scoring server does not answer") if was_healthy else \
            (TRANSITIONING, None)

    def _container(self, container_id):
        import docker.errors

        try:
            return self.client.containers.get(container_id)
        except docker.errors.NotFound:
            return None

    def _answers(self, record):
        try:
            with urllib.request.urlopen(f"{base_url(record)}/", timeout=_HEALTH_TIMEOUT_S) as reply:
                return reply.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def wait(self, name, timeout_s=None, on_state=lambda record: None, poll_s=0.5):
        """Poll the service until it leaves Transitioning (or timeout_s passes); its record."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            record = self.status(name)
            on_state(record)
            if record["state"] != TRANSITIONING:
                return record
            if deadline is not None and time.monotonic() > deadline:
                raise ServiceError(f"service {name!r} is still {TRANSITIONING} after {timeout_s} s")
            time.sleep(poll_s)

    def logs(self, name, num_lines=5000):
        """The scoring container's output (stdout and stderr), its last num_lines lines."""
        record = self.records.get(name)
        scorer = self._container(record["scorer_id"]) if record["scorer_id"] else None
        if scorer is None:
            raise ServiceError(f"service {name!r} has no scoring container (it is "
                               f"{record['state']}): no logs to show")
        return scorer.logs(tail=num_lines).decode("utf-8", errors="replace")

    def invoke(self, name, data, key=None, timeout_s=60):
        """POST `data` (text) to the service's /score; (HTTP status, body text). With
        authentication on, the primary key is sent unless another `key` is given."""
        record = self.records.get(name)
        if record["port"] is None:
            raise ServiceError(f"service {name!r} has no published port (it is {record['state']})")
        headers = {"Content-Type": "application/json"}
        key = key if key is not None else record["keys"].get("primaryKey")
        if record["auth_enabled"] and key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(scoring_uri(record), data=data.encode("utf-8"),
                                         headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as reply:
                return reply.status, reply.read().decode("utf-8", errors="replace")
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode("utf-8", errors="replace")
        except OSError as error:
            raise ServiceError(f"service {name!r} did not answer at {scoring_uri(record)}: "
                               f"{error}") from None


def _bind(source, target, read_only):
    return {"Type": "bind", "Source": str(source), "Target": target, "ReadOnly": read_only}


def _published_port(container):
    container.reload()
    published = container.attrs["NetworkSettings"]["Ports"].get(f"{RELAY_PORT}/tcp") or []
    if not published:
        raise ServiceError("the engine published no port for the service's relay")
    return int(published[0]["HostPort"])
