"""Pure builders: from a run (its typed spec, id and folder) to what an executor starts. No Docker,
no I/O.

Inside a container the run sees this layout (the process executor uses host paths instead):

    /amlocal/wd                 working directory: a fresh copy of the source snapshot
    /amlocal/wd/outputs         the run's ./outputs, mapped into the run history
    /amlocal/wd/logs            the run's ./logs, mapped into the run history
    /amlocal/inputs/<name>      named inputs, read-only
    /amlocal/runtime            the run-side Run API (sitecustomize + amlocal_run), read-only
    /amlocal/telemetry          where the script's Run API appends what it logs
    /amlocal/output             the script's stdout and stderr, one file (see script_output.py)
    /amlocal/emulator           the sockets of the run's emulator endpoint and its CA, read-only
                                (run_endpoint.py)
"""

from dataclasses import dataclass
from pathlib import PurePosixPath

from amlocal.backends.base import DATAREFERENCE_PREFIX, substitute_data_references
from amlocal.backends.local.script_output import (EXIT_STATUS_FILE, LAUNCHER, OUTPUT_DIR,
                                                   OUTPUT_FILE, OUTPUT_NAME)
from amlocal.backends.history.store import TELEMETRY_FILE
from amlocal.backends.local.run_endpoint import (BLOB_SOCKET_NAME, CA_NAME, IN_CONTAINER_BLOB_PORT,
                                                 IN_CONTAINER_PORT, SOCKET_NAME)

IN_RUN_ROOT = PurePosixPath("/amlocal")
IN_RUN_WORKDIR = IN_RUN_ROOT / "wd"
IN_RUN_RUNTIME = IN_RUN_ROOT / "runtime"
IN_RUN_TELEMETRY = IN_RUN_ROOT / "telemetry"
IN_RUN_INPUTS = IN_RUN_ROOT / "inputs"
IN_RUN_OUTPUT = IN_RUN_ROOT / "output"
IN_RUN_ENDPOINT = IN_RUN_ROOT / "emulator"
WORKSPACE_NAME = "local"
CONTAINER_LABEL = "amlocal.run_id"
# Threads count as pids: 16 data-loader workers with a 64-thread BLAS pool each, plus the main
# process's, stay under it; a fork bomb stops at it, far below the host's pid_max (32768 or more).
PIDS_LIMIT = 2048
# The only writable place in a confined container besides the run's folders: $HOME and temp files.
# exec: JIT compilers (CuPy, Numba) load what they build there; nosuid keeps it harmless.
WRITABLE_TMP = {"/tmp": "rw,exec,nosuid,nodev,mode=1777"}
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
# What a process-executor script takes from the submitter's environment: what it needs to start
# and behave as in their shell (find programs and libraries, locale, time zone, terminal, the
# GPUs chosen for the host), to use the network it shares with the host (proxy, CA bundle: a
# dataset download needs them), and AMLOCAL_HOME, so that the SDK in the script (Model.
# get_model_path, Datastore) finds the workspace the run belongs to, as a run on Azure does.
# Credentials, cloud tokens and amlocal's other settings stay out; --env passes anything else.
INHERITED_VARIABLES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TERM", "TMPDIR", "AMLOCAL_HOME",
    "PYTHONPATH", "PYTHONHOME", "LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES", "CUDA_HOME", "CUDA_PATH",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", *PROXY_VARIABLES,
})
INHERITED_PREFIXES = ("LC_",)  # LC_ALL, LC_CTYPE, ...


@dataclass(frozen=True)
class RunPaths:
    """Where a run's parts are, as seen by the script (in-run) for one executor."""

    workdir: str
    outputs: str
    logs: str
    runtime: str
    telemetry_dir: str
    inputs: dict  # name -> path


def run_environment(run_id, experiment, paths, extra=None, user_variables=None,
                    inherited_pythonpath=None):
    """The environment variables a script sees in a run, named as Azure ML v1 names them.

    `user_variables` (the run's environment_variables) come first, so amlocal's own names win;
    a PYTHONPATH among them, and then `inherited_pythonpath`, go after amlocal's runtime.
    """
    environment = dict(user_variables or {})
    pythonpath = [paths.runtime, environment.get("PYTHONPATH"), inherited_pythonpath]
    environment.update({
        "AZUREML_RUN_ID": run_id,
        "AZUREML_ARM_PROJECT_NAME": experiment,
        "AZUREML_ARM_WORKSPACE_NAME": WORKSPACE_NAME,
        # azureml-core sets this to the relative ./outputs before a script starts.
        "AZUREML_OUTPUT_DIRECTORY": "./outputs",
        "AMLOCAL_TELEMETRY_FILE": f"{paths.telemetry_dir}/{TELEMETRY_FILE}",
        "PYTHONPATH": ":".join(part for part in pythonpath if part),
        "PYTHONUNBUFFERED": "1",
    })
    for name, path in paths.inputs.items():
        environment[DATAREFERENCE_PREFIX + name] = str(path)
    environment.update(extra or {})
    return environment


def script_command(python, script, arguments, paths):
    """argv for the script: the interpreter, the script, its arguments with inputs resolved."""
    return [python, script, *substitute_data_references(arguments, paths.inputs)]


def launched(python, runtime, output_file, command, exit_status_file=None, relays=()):
    """argv that starts `command` through the run's launcher (runtime/amlocal_launch.py), its
    output going to `output_file`; isolated mode (-I -S) keeps the run's PYTHONPATH and its
    sitecustomize for the script alone. `relays`: "LISTEN=SOCKET" each, the launcher's relays
    to the run's emulator endpoint."""
    status = ["--exit-status", str(exit_status_file)] if exit_status_file else []
    relaying = [part for relay in relays for part in ("--relay", relay)]
    return [python, "-I", "-S", f"{runtime}/{LAUNCHER}", "--output", str(output_file), *status,
            *relaying, "--", *command]


def container_paths(input_names):
    return RunPaths(
        workdir=str(IN_RUN_WORKDIR),
        outputs=str(IN_RUN_WORKDIR / "outputs"),
        logs=str(IN_RUN_WORKDIR / "logs"),
        runtime=str(IN_RUN_RUNTIME),
        telemetry_dir=str(IN_RUN_TELEMETRY),
        inputs={name: str(IN_RUN_INPUTS / name) for name in sorted(input_names)},
    )


def resource_settings(resources):
    """docker-py keyword arguments that confine a container to its node(s)' share of the host."""
    if resources is None:
        return {}
    settings = {}
    if resources.cpuset:
        settings["cpuset_cpus"] = resources.cpuset
    if resources.nano_cpus:
        settings["nano_cpus"] = resources.nano_cpus
    if resources.memory_bytes:
        # The same figure for memory and memory+swap: the node has no swap to spill into.
        settings["mem_limit"] = resources.memory_bytes
        settings["memswap_limit"] = resources.memory_bytes
    if resources.gpu_ids:
        settings["device_requests"] = [{"Driver": "nvidia", "DeviceIDs": list(resources.gpu_ids),
                                        "Capabilities": [["gpu"]]}]
    return settings


def confinement_settings(run_as_root=False):
    """docker-py keyword arguments that keep a script from gaining or using privileges.

    Always: no privilege gain through setuid files (no-new-privileges) and a pids limit. Unless
    the run opted out with run_as_root: no capabilities and a read-only root filesystem with a
    writable /tmp. (The container's uid is `user`, see ownership.py.)
    """
    settings = {"security_opt": ["no-new-privileges"], "pids_limit": PIDS_LIMIT}
    if not run_as_root:
        settings.update(cap_drop=["ALL"], read_only=True, tmpfs=dict(WRITABLE_TMP))
    return settings


def container_settings(run, *, image, working_dir, runtime_dir, user=None, resources=None,
                       endpoint=None, program=None, output_name=OUTPUT_NAME):
    """Keyword arguments for docker-py's `containers.create` for one run (a jobs.LocalRun).

    `working_dir` is the host copy of the snapshot the run works in; `user` the "uid:gid" the
    script runs as (None: the image's user); `resources` the NodeResources of the node(s) the run
    was given (None: no limits); `endpoint` the run's emulator endpoint (run_endpoint.py, serving
    at IN_CONTAINER_URL; None: none). The spec's `run_as_root` opts out of the confinement.
    Mounts are plain dicts in the Docker Engine API's shape (docker.types.Mount is such a dict).
    `program` (argv) replaces the script's command, and `output_name` names its output file in
    IN_RUN_OUTPUT: a distributed run's node starts its ranks or its node agent (distributed.py).
    """
    spec, run_dir = run.spec, run.run_dir
    inputs = spec.inputs
    paths = container_paths(inputs)

    def bind(source, target, read_only):
        return {"Type": "bind", "Source": str(source), "Target": str(target),
                "ReadOnly": read_only}

    mounts = [
        bind(working_dir, paths.workdir, False),
        bind(f"{run_dir}/outputs", paths.outputs, False),
        bind(f"{run_dir}/logs", paths.logs, False),
        bind(f"{run_dir}/telemetry", paths.telemetry_dir, False),
        bind(runtime_dir, paths.runtime, True),
        bind(f"{run_dir}/{OUTPUT_DIR}", IN_RUN_OUTPUT, False),
    ]
    mounts += [bind(inputs[name], paths.inputs[name], True) for name in sorted(inputs)]
    # The script's user has no home of its own in the image; libraries that cache under $HOME
    # (matplotlib, chainer's dataset root, azureml-core's ~/.azureml) need one that is writable.
    extra = {"HOME": "/tmp"}
    if resources is not None and resources.emulated_gpus:
        extra["AMLOCAL_EMULATED_GPUS"] = str(resources.emulated_gpus)
    relays = ()
    if endpoint is not None:
        mounts.append(bind(endpoint.folder, IN_RUN_ENDPOINT, True))
        extra.update(endpoint.variables(ca_file=IN_RUN_ENDPOINT / CA_NAME))
        relays = (f"127.0.0.1:{IN_CONTAINER_PORT}={IN_RUN_ENDPOINT / SOCKET_NAME}",
                  f"127.0.0.1:{IN_CONTAINER_BLOB_PORT}={IN_RUN_ENDPOINT / BLOB_SOCKET_NAME}")
    environment = run_environment(run.id, run.experiment, paths, extra=extra,
                                  user_variables=spec.environment_variables)
    settings = {
        "image": image,
        "command": launched("python", paths.runtime, IN_RUN_OUTPUT / output_name,
                            program or script_command("python", spec.script, spec.arguments,
                                                      paths),
                            relays=relays),
        # The launcher writes the output to its file; dockerd need not keep a second copy.
        "log_config": {"Type": "none", "Config": {}},
        "working_dir": paths.workdir,
        "environment": environment,
        "mounts": mounts,
        # Trainers get no network, as on a locked-down compute node; inputs come as mounts.
        "network_mode": "none",
        # An init process as PID 1 forwards SIGTERM to the script (a Python PID 1 would ignore
        # it, and every cancel would wait for the SIGKILL) and reaps its children.
        "init": True,
        "labels": {CONTAINER_LABEL: run.id},
        "name": f"amlocal-{run.id}",
        "detach": True,
    }
    if user:
        settings["user"] = user
    settings.update(confinement_settings(spec.run_as_root))
    settings.update(resource_settings(resources))
    return settings


def inherited_environment(base_environment):
    """The part of the submitter's environment a process-executor script sees (an allow-list)."""
    return {name: value for name, value in base_environment.items()
            if name in INHERITED_VARIABLES or name.startswith(INHERITED_PREFIXES)}


def process_settings(run, *, python, working_dir, runtime_dir, base_environment, endpoint=None,
                     relay_fds=(), program=None, extra=None):
    """argv, cwd and environment for running a run's script (a jobs.LocalRun) as a host
    subprocess (process executor).

    The run sees host paths: its working directory is a copy of the snapshot whose outputs/ and
    logs/ are links into the run history, and inputs are passed by their host paths (read-only
    is not enforced here: there is no mount namespace). Of `base_environment` (the submitter's)
    it sees only INHERITED_VARIABLES; the spec's environment_variables (--env) come on top.
    `endpoint` is the run's emulator endpoint (run_endpoint.py; None: none), reached through
    the listening sockets `relay_fds` (its app's, its https route's) that the launcher inherits.
    `program(paths)` (argv), where given, replaces the script's command (a distributed run starts
    its ranks instead: distributed.py); `extra` variables are set on top of amlocal's own.
    """
    spec, run_dir, inputs = run.spec, run.run_dir, run.spec.inputs
    paths = RunPaths(
        workdir=str(working_dir),
        outputs=f"{working_dir}/outputs",
        logs=f"{working_dir}/logs",
        runtime=str(runtime_dir),
        telemetry_dir=f"{run_dir}/telemetry",
        inputs={name: str(inputs[name]) for name in sorted(inputs)},
    )
    environment = inherited_environment(base_environment)
    extra = dict(extra or {}, **(endpoint.variables(environment) if endpoint is not None else {}))
    environment.update(run_environment(run.id, run.experiment, paths, extra=extra,
                                       user_variables=spec.environment_variables,
                                       inherited_pythonpath=environment.get("PYTHONPATH")))
    relays = ()
    if endpoint is not None:
        relays = tuple(f"fd:{fd}={path}" for fd, path in
                       zip(relay_fds, (endpoint.socket_path, endpoint.blob_socket_path)))
    return {
        "args": launched(python, paths.runtime, f"{run_dir}/{OUTPUT_FILE}",
                         (program(paths) if program else
                          script_command(python, spec.script, spec.arguments, paths)),
                         exit_status_file=f"{run_dir}/{EXIT_STATUS_FILE}", relays=relays),
        "cwd": paths.workdir,
        "env": environment,
    }
