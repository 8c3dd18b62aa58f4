"""A distributed run on the docker executor: one container per node, on a network of the run's own.

Each node's container is confined as a single run's is (run_settings.py) and limited to its own
node's share of the host; instead of network "none" it has the run's network and nothing else:
an internal bridge (no route out) whose host side has no address (the bridge's inhibit_ipv4
option), so a rank reaches its sibling nodes by name (node-0, node-1, ...) and nothing of the
host (no listener on the host, on 0.0.0.0 or anywhere, is reachable from it); the emulator
endpoint is reached as in every run, through the launcher's relay to the socket mounted from the
run folder. The network is created for the run and removed with its containers; both carry the
run's label, so whoever cleans up after a dead driver (recovery.py) finds them.

MPI: the first node's container runs mpirun, the others amlocal's node agent, through which
mpirun starts its daemons there (runtime/amlocal_node_agent.py). PyTorch: every node's container
starts its own ranks (runtime/amlocal_ranks.py). The run ends when its ranks have ended: for MPI
when mpirun has (it stops every rank when one fails), for PyTorch when every node has, or when
one node's ranks failed (the others are then stopped).
"""

import queue
import threading

import docker.errors
import requests.exceptions

from amlocal.backends.local import distributed
from amlocal.backends.local.jobs import Job
from amlocal.backends.local.run_settings import (CONTAINER_LABEL, IN_RUN_OUTPUT, IN_RUN_RUNTIME,
                                                 container_paths, container_settings,
                                                 script_command)
from amlocal.backends.local.script_output import OUTPUT_NAME, follow_output

NODE_LABEL = "amlocal.node"
# The run's network: internal (no gateway out) and no address of the host's on it.
NETWORK_OPTIONS = {"com.docker.network.bridge.inhibit_ipv4": "true"}
# The one interface of a node's container besides its loopback: the run's network.
NODE_INTERFACE = "eth0"
_STOPPED_BY_SIGNAL = (137, 143)
_ENGINE_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)


def node_name(run_id, node_index):
    """The first node's container keeps a single run's name (amlocal-<run id>)."""
    return f"amlocal-{run_id}" if node_index == 0 else f"amlocal-{run_id}-node-{node_index}"


def _node_program(spec, node_index, script):
    """(argv, output file name) of node `node_index`'s container."""
    runtime, kind = IN_RUN_RUNTIME, spec.distribution.kind
    per_node = spec.distribution.process_count_per_node
    output = OUTPUT_NAME if node_index == 0 else f"node_{node_index}.txt"
    if kind == "pytorch":
        return distributed.ranks_command("python", runtime, IN_RUN_OUTPUT, script, spec,
                                         first_rank=node_index * per_node, count=per_node), output
    if node_index > 0:
        return ["python", "-I", "-S", f"{runtime}/{distributed.NODE_AGENT}", "serve",
                str(distributed.NODE_AGENT_PORT)], output
    hosts = [distributed.node_hostname(index) for index in range(spec.node_count)]
    ranks = distributed.ranks_command("python", runtime, IN_RUN_OUTPUT, script, spec)
    return distributed.mpirun_command("mpirun", spec, ranks, hosts=hosts,
                                      interface=NODE_INTERFACE,
                                      agent=f"python -I -S {runtime}/{distributed.NODE_AGENT} exec"), output


def node_settings(run, node_index, network_name, **settings_arguments):
    """docker-py settings of node `node_index`'s container (see container_settings)."""
    spec = run.spec
    script = script_command("python", spec.script, spec.arguments, container_paths(spec.inputs))
    program, output = _node_program(spec, node_index, script)
    settings = container_settings(run, program=program, output_name=output, **settings_arguments)
    hostname = distributed.node_hostname(node_index)
    settings["environment"].update(distributed.node_variables(
        spec, node_index, distributed.node_hostname(0)))
    settings["environment"]["AMLOCAL_NODE_AGENT_PORT"] = str(distributed.NODE_AGENT_PORT)
    # The script's uid has no passwd entry in the image, so Open MPI cannot look its shell up.
    settings["environment"].setdefault("SHELL", "/bin/sh")
    if spec.run_as_root:
        settings["environment"].update(distributed.MPI_ROOT_VARIABLES)
    del settings["network_mode"]  # "none" for a single run: this one has the run's network
    settings.update(name=node_name(run.id, node_index), hostname=hostname, network=network_name,
                    labels={CONTAINER_LABEL: run.id, NODE_LABEL: str(node_index)})
    return settings


def start_nodes(executor, run, runtime_dir, prepared, on_line, resources, endpoint):
    """Create the run's network and node containers and start them; the DistributedDockerJob."""
    spec, client = run.spec, executor.client
    working_dir, user = executor.prepare_run_folder(
        run, endpoint, before_hand_over=lambda: distributed.prepare_rank_outputs(run.run_dir, spec))
    network = client.networks.create(
        node_name(run.id, 0), driver="bridge", internal=True, options=NETWORK_OPTIONS,
        labels={CONTAINER_LABEL: run.id}, check_duplicate=True)
    containers = []
    try:
        for index in range(spec.node_count):
            settings = node_settings(run, index, network.name, image=prepared.image,
                                     working_dir=working_dir, runtime_dir=runtime_dir, user=user,
                                     resources=resources[index], endpoint=endpoint)
            # The siblings reach the node by its hostname on the run's network.
            settings["networking_config"] = {network.name: client.api.create_endpoint_config(
                aliases=[settings["hostname"]])}
            containers.append(executor.create_container(settings))
        tail = follow_output(run.run_dir, on_line)  # opened before the ranks write
        # Node agents first: mpirun on the first node dials them as it starts.
        for container in reversed(containers):
            container.start()
    except BaseException:
        _remove(containers, network)
        raise
    # Only now: waiting on a container that was created but not started returns at once.
    return DistributedDockerJob(containers, network, run,
                                distributed.RankOutputs(tail, run.run_dir, spec))


def attach_nodes(client, run, on_line):
    """The job of a distributed run whose driver died (None: its first node's container, whose
    end is the run's, is gone; what is left of the others is removed)."""
    owned = {"label": f"{CONTAINER_LABEL}={run.id}"}
    containers = sorted(client.containers.list(all=True, filters=owned),
                        key=lambda container: int(container.labels.get(NODE_LABEL, 0)))
    networks = client.networks.list(filters=owned)
    if len(containers) < run.spec.node_count or containers[0].labels.get(NODE_LABEL) != "0":
        _remove(containers, networks[0] if networks else None)
        return None
    tail = follow_output(run.run_dir, on_line)
    return DistributedDockerJob(containers, networks[0] if networks else None, run,
                                distributed.RankOutputs(tail, run.run_dir, run.spec))


def _remove(containers, network):
    from amlocal.backends.local.docker_executor import give_back_files

    for container in containers:
        try:
            container.remove(force=True)
            give_back_files(container)
        except _ENGINE_ERRORS:
            pass  # gone, or the engine is: remove_leftovers finds it by its label later
    if network is not None:
        try:
            network.remove()
        except _ENGINE_ERRORS:
            pass


class DistributedDockerJob(Job):
    """The containers of a distributed run's nodes (the first one's is the job's identity)."""

    def __init__(self, containers, network, run, output):
        self.containers = containers
        self.network = network
        self.spec = run.spec
        self.run_dir = run.run_dir
        self._stopped_by_amlocal = False
        super().__init__(wait_for_exit=self._wait_for_ranks, output=output)

    def _wait_for_ranks(self):
        """The exit code of the run's ranks: mpirun's (node 0) for MPI; for PyTorch the first
        failing node's, else 0. Once it is known, every container still running is stopped."""
        ended = queue.Queue()
        for index, container in enumerate(self.containers):
            threading.Thread(target=self._wait_one, args=(index, container, ended),
                             name="amlocal-node-exit", daemon=True).start()
        running = set(range(len(self.containers)))
        rank_nodes = running if self.spec.distribution.kind == "pytorch" else {0}
        outcome = None
        while running:
            index, code = ended.get()
            running.discard(index)
            if isinstance(code, BaseException):
                raise code
            if index in rank_nodes and outcome is None and (code != 0 or index == 0
                                                            and len(rank_nodes) == 1):
                outcome = code
                self._stop_others(index)
            if outcome is None and not running & rank_nodes:
                outcome = 0
                self._stop_others(index)
        return outcome if outcome is not None else 0

    @staticmethod
    def _wait_one(index, container, ended):
        try:
            ended.put((index, container.wait()["StatusCode"]))
        except Exception as error:
            ended.put((index, error))

    def _stop_others(self, ended_index):
        """The ranks have an outcome: what still runs (node agents, other nodes' ranks) stops,
        in the background so that the outcome is not held up."""
        self._stopped_by_amlocal = True
        others = [container for index, container in enumerate(self.containers)
                  if index != ended_index]
        threading.Thread(target=self._stop_all, args=(others, distributed_stop_grace()),
                         daemon=True).start()

    @staticmethod
    def _stop_all(containers, grace_s):
        stoppers = [threading.Thread(target=_stop_quietly, args=(container, grace_s), daemon=True)
                    for container in containers]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join()

    def identity(self):
        return {"container_id": self.containers[0].id}

    def stop(self, grace_s):
        self._stopped_by_amlocal = True
        self._stop_all(self.containers, grace_s)

    def kill(self):
        self._stopped_by_amlocal = True
        for container in self.containers:
            try:
                container.kill()
            except _ENGINE_ERRORS:
                pass

    def failed_rank(self):
        return distributed.failed_rank(self.run_dir, self.spec)

    def termination_reason(self):
        for index, container in enumerate(self.containers):
            try:
                container.reload()
            except _ENGINE_ERRORS as error:
                return f"infrastructure failure: lost the docker engine when the script ended ({error})"
            state = container.attrs["State"]
            if state.get("OOMKilled"):
                limit = container.attrs["HostConfig"].get("Memory") or 0
                within = f" of {limit / 2**30:.1f} GiB" if limit else ""
                return (f"out of memory: the ranks on node {index} exceeded their node's "
                        f"memory{within} and were killed")
            if (state.get("ExitCode") in _STOPPED_BY_SIGNAL and not self._stopped_by_amlocal):
                return (f"infrastructure failure: the container of the run's node {index} was "
                        f"stopped from outside amlocal (exit code {state['ExitCode']}: the Docker "
                        "engine shut down or restarted, or someone ran `docker stop`/`docker "
                        "kill` on it)")
        return None

    def cleanup(self):
        _remove(self.containers, self.network)


def _stop_quietly(container, grace_s):
    try:
        container.stop(timeout=int(grace_s))
    except _ENGINE_ERRORS:
        pass


def distributed_stop_grace():
    """How long the other nodes get to stop once the ranks' outcome is known."""
    from amlocal.backends.local.lifecycle import stop_grace_s

    return stop_grace_s()
