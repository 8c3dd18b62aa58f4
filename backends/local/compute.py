"""Local compute targets that behave like AmlCompute: nodes, one queue, scaling.

A target (its definition is the run history's: history/compute_targets.py) has a VM size and
between min_nodes and max_nodes nodes. A node is a slot of the host:
its run's container gets the node's share of cores (pinned with a cpuset), its memory as a hard
limit, and its GPUs. Runs wait in one first-come-first-served queue per target: only the run at
the head may take nodes, and it takes idle nodes first, then scales the target up to max_nodes.
Nodes idle for idle_seconds_before_scaledown are removed, down to min_nodes.

Everything lives in the run history's SQLite file and every decision is made inside one IMMEDIATE
transaction, so two terminals (or two users) submitting to one target never get the same node.
`local` is built in: one node that is the whole host, no limits.
"""

import json
import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from functools import lru_cache

from amlocal.backends import status as run_status
from amlocal.backends.history.compute_targets import (DEFAULT_IDLE_SECONDS, LOCAL_TARGET,
                                                      MAX_CLUSTER_NODES, PRIORITIES, VM_SIZES,
                                                      ComputeTargetError, ComputeTargetRecords,
                                                      TargetSpec, VmSize, local_target)
from amlocal.backends.history.records import iso_time
from amlocal.backends.liveness import process_alive
from amlocal.backends.local.queue_wake import wake
from amlocal.errors import AmlocalError, UserInputError

# The targets' definitions are the run history's (both backends read them); they are importable
# from here too, as the local backend, the CLI and the SDK's ComputeTarget have always done.
__all__ = ["DEFAULT_IDLE_SECONDS", "LOCAL_TARGET", "MAX_CLUSTER_NODES", "PRIORITIES", "VM_SIZES",
           "ComputeTargetError", "ComputeTargets", "HostResources", "NodeResources", "TargetSpec",
           "VmSize", "combine_node_resources", "host_resources", "local_memory_limit",
           "local_target", "node_resources", "target_has_gpus", "target_has_real_gpus"]


@dataclass(frozen=True)
class HostResources:
    cores: tuple  # the CPU numbers this process may use
    memory_bytes: int
    gpus: tuple  # GPU indices as strings, as NVIDIA's tools number them

    def describe(self):
        return (f"{len(self.cores)} cores, {self.memory_bytes / 2**30:.0f} GiB"
                f"{f', {len(self.gpus)} GPUs' if self.gpus else ', no GPU'}")


@lru_cache(maxsize=1)
def host_resources():
    """What this machine offers to nodes (read once per process)."""
    cores = tuple(sorted(os.sched_getaffinity(0)))
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    gpus = ()
    if shutil.which("nvidia-smi"):
        try:
            listed = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                                    capture_output=True, text=True, timeout=10).stdout
            gpus = tuple(line.strip() for line in listed.splitlines() if line.strip().isdigit())
        except (OSError, subprocess.SubprocessError):
            gpus = ()
    return HostResources(cores=cores, memory_bytes=memory, gpus=gpus)


@dataclass(frozen=True)
class NodeResources:
    """What one node gives its run's container. None means no limit."""

    cpuset: str | None
    nano_cpus: int | None
    memory_bytes: int | None
    gpu_ids: tuple
    emulated_gpus: int = 0


def local_memory_limit(host_memory_bytes):
    """The memory a run on the `local` target may use: the host's, less a reserve.

    The reserve (a tenth of the host's memory, at least 1 GiB) keeps the host itself, its Docker
    engine and the amlocal process recording the run alive when a script grows without bound:
    the run is stopped (out of memory) instead of the kernel's OOM killer picking among the
    host's processes. Whole MiB, as the kernel rounds limits to pages.
    """
    reserve = max(host_memory_bytes // 10, 1 << 30)
    usable = max(host_memory_bytes - reserve, host_memory_bytes // 2)
    return usable // 2**20 * 2**20


def node_resources(target, slot, host):
    """The share of the host that node `slot` of `target` stands for."""
    if target.name == LOCAL_TARGET:
        return NodeResources(cpuset=None, nano_cpus=None,
                             memory_bytes=local_memory_limit(host.memory_bytes), gpu_ids=host.gpus)
    size = target.size
    memory = int(size.memory_gib * 2**30)
    if target.allow_overcommit:
        # Nodes share the host's cores: each may use its size's worth of CPU time.
        cpuset = None
        nano_cpus = min(size.cores, len(host.cores)) * 10**9
        memory = min(memory, host.memory_bytes)
    else:
        cpuset = ",".join(str(core) for core in host.cores[slot * size.cores:(slot + 1) * size.cores])
        nano_cpus = None
    real_gpus = host.gpus[slot * size.gpus:(slot + 1) * size.gpus] if size.gpus else ()
    if len(real_gpus) < size.gpus:  # --emulate-gpus: the run sees no GPU and uses the CPU
        return NodeResources(cpuset, nano_cpus, memory, (), emulated_gpus=size.gpus)
    return NodeResources(cpuset, nano_cpus, memory, tuple(real_gpus))


def _new_node_id(priority):
    # Azure's node ids look like tvmps_<hex>_d (dedicated) or _p (low priority).
    return f"tvmps_{secrets.token_hex(16)}_{'p' if priority == 'lowpriority' else 'd'}"


class ComputeTargets(ComputeTargetRecords):
    """The targets, nodes and queue of one run history (a RunStore), on this host."""

    def __init__(self, store, host=None):
        super().__init__(store)
        self.host = host or host_resources()

    # -- targets -------------------------------------------------------------------------------

    def create(self, spec):
        """Create a target (and its min_nodes idle nodes); UserInputError if invalid or taken."""
        spec = spec.validated(self.host)
        now = time.time()
        with self.store.transaction() as conn:
            self.insert_in(conn, spec, now)
            for slot in range(spec.min_nodes):
                self._add_node(conn, spec, slot, "idle", now)
        return spec

    def delete(self, name):
        """Delete a target with no active runs (running or queued)."""
        self.get(name)
        if name == LOCAL_TARGET:
            raise UserInputError("'local' is the built-in target and cannot be deleted")
        with self.store.transaction() as conn:
            active = self._active_runs(conn, name)
            if active:
                raise ComputeTargetError(
                    f"compute target {name!r} has {len(active)} active run(s) "
                    f"({', '.join(active[:3])}{', ...' if len(active) > 3 else ''}): cancel them "
                    "or wait for them to end")
            conn.execute("DELETE FROM nodes WHERE target = ?", (name,))
            self.delete_in(conn, name)

    def status(self, name):
        """AmlComputeStatus.serialize()'s shape, read after idle nodes are scaled down."""
        spec = self.get(name)
        with self.store.transaction() as conn:
            self._scale_down(conn, spec, time.time())
            states = [row["state"] for row in conn.execute(
                "SELECT state FROM nodes WHERE target = ?", (name,))]
            waiting = sum(entry["node_count"] for entry in self._prune_queue(conn, name))
            created_at, modified_at = self.times_in(conn, name)
        counts = {state: states.count(state) for state in
                  ("preparing", "running", "idle", "unusable", "leaving", "preempted")}
        current = len(states)
        # Idle nodes count until scaled down (Azure keeps them in the target, Steady); queued
        # runs take them first and add nodes only for the rest.
        target_count = min(spec.max_nodes,
                           max(spec.min_nodes, counts["running"] + max(counts["idle"], waiting)))
        return {
            "currentNodeCount": current,
            "targetNodeCount": target_count,
            "nodeStateCounts": {f"{state}NodeCount": count for state, count in counts.items()},
            "allocationState": "Steady" if target_count == current else "Resizing",
            "allocationStateTransitionTime": None,
            "errors": None,
            "creationTime": iso_time(created_at),
            "modifiedTime": iso_time(modified_at),
            "provisioningState": "Succeeded",
            "provisioningStateTransitionTime": None,
            "scaleSettings": {
                "minNodeCount": spec.min_nodes,
                "maxNodeCount": spec.max_nodes,
                "nodeIdleTimeBeforeScaleDown": (f"PT{spec.idle_seconds_before_scaledown}S"
                                                if spec.idle_seconds_before_scaledown else ""),
            },
            "vmPriority": "LowPriority" if spec.vm_priority == "lowpriority" else "Dedicated",
            "vmSize": spec.vm_size,
        }

    def describe(self, name):
        """A JSON-ready view of one target for `amlocal compute show`."""
        spec = self.get(name)
        size = spec.size
        status = self.status(name)  # first: it scales down, so the nodes below agree with it
        with self.store.transaction() as conn:
            nodes = [dict(row) for row in conn.execute(
                "SELECT node_id, slot, state, run_id FROM nodes WHERE target = ? ORDER BY slot",
                (name,))]
            queued = [row["run_id"] for row in conn.execute(
                "SELECT run_id FROM queue WHERE target = ? ORDER BY seq", (name,))]
        return {
            "name": spec.name,
            "vm_size": spec.vm_size,
            "vm_priority": spec.vm_priority,
            "min_nodes": spec.min_nodes,
            "max_nodes": spec.max_nodes,
            "idle_seconds_before_scaledown": spec.idle_seconds_before_scaledown,
            "allow_overcommit": spec.allow_overcommit,
            "emulate_gpus": spec.emulate_gpus,
            "node_size": ({"cores": size.cores, "memory_gib": size.memory_gib, "gpus": size.gpus,
                           "gpu_model": size.gpu_model} if size else
                          {"host": self.host.describe()}),
            "nodes": nodes,
            "queue": queued,
            "status": status,
        }

    # -- the queue and the nodes ------------------------------------------------------------

    def enqueue(self, conn, run_id, target, node_count):
        """Put a run at the back of its target's queue (inside the run's creation transaction).

        A run that asks for more nodes than the target can ever have is refused: at the head of
        the queue it would block every run behind it forever.
        """
        spec = self.get_in(conn, target)
        if not 1 <= node_count <= spec.max_nodes:
            raise UserInputError(f"the run requested {node_count} node(s) and compute target "
                                 f"{target!r} has at most {spec.max_nodes}")
        conn.execute("INSERT INTO queue (target, run_id, node_count, enqueued_at) VALUES (?, ?, ?, ?)",
                     (target, run_id, node_count, time.time()))

    def requeue_first(self, run_id):
        """Put a preempted run back at the head of its target's queue."""
        with self.store.transaction() as conn:
            run = conn.execute("SELECT compute, spec FROM runs WHERE id = ?", (run_id,)).fetchone()
            node_count = _node_count(run)
            first = conn.execute("SELECT MIN(seq) FROM queue").fetchone()[0]
            seq = (1 if first is None else first) - 1  # seq 0 is a queued run too
            conn.execute("INSERT INTO queue (seq, target, run_id, node_count, enqueued_at) "
                         "VALUES (?, ?, ?, ?, ?)", (seq, run["compute"], run_id, node_count, time.time()))

    def try_allocate(self, run_id):
        """Give the run its nodes if it is at the head of the queue and enough are free.

        Returns [(node_id, slot)] or None. Queue entries of runs that ended, or whose driving
        process died, are dropped on the way, so a dead run never blocks the queue.
        """
        with self.store.transaction() as conn:
            # Read under the write lock: runs woken together wait for it in turn, and a time read
            # before it could stamp a later allocation earlier than the one it waited for.
            now = time.time()
            entry = conn.execute("SELECT * FROM queue WHERE run_id = ?", (run_id,)).fetchone()
            if entry is None:
                raise AmlocalError(f"run {run_id} is not queued")
            target = self.get_in(conn, entry["target"])
            self._scale_down(conn, target, now)
            head = self._live_head(conn, target.name)
            if head is None or head["run_id"] != run_id:
                return None
            need = entry["node_count"]
            idle = conn.execute("SELECT node_id, slot FROM nodes WHERE target = ? AND state = 'idle' "
                                "ORDER BY slot", (target.name,)).fetchall()
            taken = [(row["node_id"], row["slot"]) for row in idle[:need]]
            existing = conn.execute("SELECT slot FROM nodes WHERE target = ?",
                                    (target.name,)).fetchall()
            used_slots = {row["slot"] for row in existing}
            room = target.max_nodes - len(existing)
            if len(taken) + room < need:
                return None
            free_slots = (slot for slot in range(target.max_nodes) if slot not in used_slots)
            while len(taken) < need:
                slot = next(free_slots)
                taken.append((self._add_node(conn, target, slot, "running", now), slot))
            for node_id, _slot in taken:
                conn.execute("UPDATE nodes SET state = 'running', run_id = ?, idle_since = NULL "
                             "WHERE target = ? AND node_id = ?", (run_id, target.name, node_id))
            conn.execute("DELETE FROM queue WHERE run_id = ?", (run_id,))
            conn.execute("UPDATE runs SET nodes = ? WHERE id = ?",
                         (_json_nodes(taken, now), run_id))
        return taken

    def waiting_detail(self, run_id):
        """Why a queued run waits, in Azure's words, with its place in the queue."""
        with self.store.transaction() as conn:
            entry = conn.execute("SELECT * FROM queue WHERE run_id = ?", (run_id,)).fetchone()
            if entry is None:
                return ""
            ahead = sum(1 for live in self._prune_queue(conn, entry["target"])
                        if live["seq"] < entry["seq"])
        return (f"Run requested {entry['node_count']} node(s). Run is in pending status."
                + (f" {ahead} run(s) ahead in the queue of {entry['target']}." if ahead else ""))

    def release(self, run_id):
        """Return the run's nodes (idle from now) and drop it from the queue, whatever its state."""
        now = time.time()
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM queue WHERE run_id = ?", (run_id,))
            # A preempted node is gone with its run; the others idle until scaled down.
            conn.execute("DELETE FROM nodes WHERE run_id = ? AND state = 'preempted'", (run_id,))
            conn.execute("UPDATE nodes SET state = 'idle', run_id = NULL, idle_since = ? "
                         "WHERE run_id = ?", (now, run_id))
            target = conn.execute("SELECT compute FROM runs WHERE id = ?", (run_id,)).fetchone()
        if target is not None:
            # After the commit, so that the runs woken see the nodes free and the queue moved on.
            wake(self.store.home, target["compute"])

    def node_states(self, run_id):
        with self.store.transaction() as conn:
            return [row["state"] for row in conn.execute(
                "SELECT state FROM nodes WHERE run_id = ?", (run_id,))]

    def preempt(self, name, run_id=None):
        """Take away the nodes of a low-priority target's running runs (or of one run).

        The runs' drivers see their node preempted, stop the script as a cancel would, and put
        the run back at the head of the queue, as Azure reschedules it. Returns the run ids.
        """
        target = self.get(name)
        if target.vm_priority != "lowpriority":
            raise ComputeTargetError(f"compute target {name!r} is dedicated: only low-priority "
                                     "nodes are preempted")
        with self.store.transaction() as conn:
            query = "SELECT DISTINCT run_id FROM nodes WHERE target = ? AND state = 'running'"
            params = [name]
            if run_id:
                query += " AND run_id = ?"
                params.append(run_id)
            runs = [row["run_id"] for row in conn.execute(query, params)]
            if run_id and not runs:
                raise ComputeTargetError(f"run {run_id} is not running on {name!r}")
            conn.executemany("UPDATE nodes SET state = 'preempted' WHERE target = ? AND run_id = ?",
                             [(name, run) for run in runs])
        return runs

    # -- helpers --------------------------------------------------------------------------------

    def _add_node(self, conn, spec, slot, state, now):
        node_id = _new_node_id(spec.vm_priority)
        conn.execute("INSERT INTO nodes (target, node_id, slot, state, created_at, idle_since) "
                     "VALUES (?, ?, ?, ?, ?, ?)",
                     (spec.name, node_id, slot, state, now, now if state == "idle" else None))
        return node_id

    def _scale_down(self, conn, spec, now):
        """Remove nodes idle longer than the target's idle time, keeping min_nodes."""
        nodes = conn.execute("SELECT node_id, state, idle_since FROM nodes WHERE target = ? "
                             "ORDER BY idle_since", (spec.name,)).fetchall()
        removable = len(nodes) - spec.min_nodes
        for node in nodes:
            if removable <= 0:
                break
            if node["state"] == "idle" and now - node["idle_since"] >= spec.idle_seconds_before_scaledown:
                conn.execute("DELETE FROM nodes WHERE target = ? AND node_id = ?",
                             (spec.name, node["node_id"]))
                removable -= 1

    def _prune_queue(self, conn, target):
        """Drop the queue entries of runs that ended or whose driving process died; return the
        live ones in order."""
        live = []
        for entry in conn.execute(
                "SELECT q.seq, q.run_id, q.node_count, r.status, r.driver_pid FROM queue q "
                "LEFT JOIN runs r ON r.id = q.run_id WHERE q.target = ? ORDER BY q.seq",
                (target,)).fetchall():
            ended = entry["status"] is None or run_status.is_terminal(entry["status"])
            orphaned = entry["driver_pid"] is not None and not process_alive(entry["driver_pid"])
            if ended or orphaned:
                conn.execute("DELETE FROM queue WHERE seq = ?", (entry["seq"],))
            else:
                live.append(entry)
        return live

    def _live_head(self, conn, target):
        """The first queue entry whose run is still alive."""
        live = self._prune_queue(conn, target)
        return live[0] if live else None

    def _active_runs(self, conn, target):
        """Runs that hold nodes of the target or wait for them (ended ones do not count)."""
        running = [row["run_id"] for row in conn.execute(
            "SELECT DISTINCT n.run_id FROM nodes n JOIN runs r ON r.id = n.run_id "
            "WHERE n.target = ? AND r.status NOT IN (?, ?, ?)",
            (target, *sorted(run_status.TERMINAL_STATUSES)))]
        queued = [entry["run_id"] for entry in self._prune_queue(conn, target)]
        return running + [run for run in queued if run not in running]


def _node_count(run_row):
    return json.loads(run_row["spec"]).get("node_count", 1)


def _json_nodes(taken, allocated_at):
    return json.dumps([{"node_id": node_id, "slot": slot, "allocated_at": allocated_at}
                       for node_id, slot in taken])


def combine_node_resources(parts, host=None):
    """The resources of a run given several nodes: their cores, memory and GPUs together."""
    if len(parts) == 1:
        return parts[0]
    cpusets = [part.cpuset for part in parts]
    memories = [part.memory_bytes for part in parts]
    nano = [part.nano_cpus for part in parts]
    # Overcommitted nodes share the host's cores: Docker refuses more CPU time than it has.
    host_nano = len((host or host_resources()).cores) * 10**9
    return NodeResources(
        cpuset=",".join(cpusets) if all(cpusets) else None,
        nano_cpus=min(sum(nano), host_nano) if all(nano) else None,
        memory_bytes=sum(memories) if all(memories) else None,
        gpu_ids=tuple(gpu for part in parts for gpu in part.gpu_ids),
        emulated_gpus=sum(part.emulated_gpus for part in parts),
    )


def target_has_gpus(target, host):
    """Whether runs on the target get GPUs, real or (emulate_gpus) emulated on the CPU."""
    if target.name == LOCAL_TARGET:
        return bool(host.gpus)
    return target.size.gpus > 0


def target_has_real_gpus(target, host):
    """Whether runs on the target get real GPUs of this host (not emulated ones)."""
    if target.name == LOCAL_TARGET:
        return bool(host.gpus)
    return 0 < target.size.gpus <= len(host.gpus)
