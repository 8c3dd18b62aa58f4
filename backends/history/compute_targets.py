"""Compute targets as the run history records them: their settings, and the table they live in.

A target is defined as AmlCompute.provisioning_configuration takes it (a VM size, min_nodes to
max_nodes nodes, the idle time before scaling down, a priority), plus two local-only switches:
allow_overcommit and emulate_gpus. Both backends read these definitions: the local backend runs
on them (local/compute.py: their nodes, the queue in front of them, scaling), and the Azure
backend creates an AmlCompute cluster alike where the workspace lacks one of that name.

`local` is built in and has no row: one node that is the whole host, no limits.
"""

import re
from dataclasses import asdict, dataclass

from amlocal.errors import AmlocalError, UserInputError
from amlocal.validation import bounded_int

LOCAL_TARGET = "local"
PRIORITIES = ("dedicated", "lowpriority")
DEFAULT_IDLE_SECONDS = 1800  # AmlCompute.provisioning_configuration's default
# Azure ML's limit on the nodes of one AmlCompute cluster (its service limits: 100 by default,
# configurable up to 65,000).
MAX_CLUSTER_NODES = 65000
# AmlCompute's rule for cluster names.
_TARGET_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,15}$")


class ComputeTargetError(AmlocalError):
    """A compute target does not exist, or cannot be changed as asked."""

    exit_code = 2


@dataclass(frozen=True)
class VmSize:
    cores: int
    memory_gib: float
    gpus: int = 0
    gpu_model: str | None = None


# Azure's published figures (vCPUs, memory GiB, GPUs) for the sizes users name most.
VM_SIZES = {
    "STANDARD_D1_V2": VmSize(1, 3.5),
    "STANDARD_D2_V2": VmSize(2, 7),
    "STANDARD_D3_V2": VmSize(4, 14),
    "STANDARD_D4_V2": VmSize(8, 28),
    "STANDARD_D11_V2": VmSize(2, 14),
    "STANDARD_DS2_V2": VmSize(2, 7),
    "STANDARD_DS3_V2": VmSize(4, 14),
    "STANDARD_DS11_V2": VmSize(2, 14),
    "STANDARD_D2_V3": VmSize(2, 8),
    "STANDARD_D4_V3": VmSize(4, 16),
    "STANDARD_NC6": VmSize(6, 56, 1, "K80"),
    "STANDARD_NC12": VmSize(12, 112, 2, "K80"),
    "STANDARD_NC24": VmSize(24, 224, 4, "K80"),
    "STANDARD_NC6S_V3": VmSize(6, 112, 1, "V100"),
    "STANDARD_NC12S_V3": VmSize(12, 224, 2, "V100"),
    "STANDARD_NC24S_V3": VmSize(24, 448, 4, "V100"),
    "STANDARD_NC4AS_T4_V3": VmSize(4, 28, 1, "T4"),
    "STANDARD_NC24ADS_A100_V4": VmSize(24, 220, 1, "A100"),
}


@dataclass(frozen=True)
class TargetSpec:
    """A compute target's settings, as AmlCompute.provisioning_configuration takes them."""

    name: str
    vm_size: str
    max_nodes: int
    min_nodes: int = 0
    idle_seconds_before_scaledown: int = DEFAULT_IDLE_SECONDS
    vm_priority: str = "dedicated"
    allow_overcommit: bool = False
    emulate_gpus: bool = False

    @property
    def size(self):
        return VM_SIZES.get(self.vm_size.upper())

    def validated(self, host):
        """This spec normalised, or UserInputError naming what is wrong (checked at create time).

        `host` is what this machine offers to nodes (local/compute.py's HostResources: cores,
        memory_bytes, gpus, describe()): a target must fit on it unless allow_overcommit or
        emulate_gpus says otherwise.
        """
        if self.name == LOCAL_TARGET:
            raise UserInputError("'local' is the built-in target and cannot be created or changed")
        if not _TARGET_NAME.fullmatch(self.name):
            raise UserInputError(f"invalid compute name {self.name!r}: 2-16 letters, digits or '-', "
                                 "starting with a letter")
        vm_size = self.vm_size.upper()
        if vm_size not in VM_SIZES:
            raise UserInputError(f"unknown VM size {self.vm_size!r}: known sizes are "
                                 f"{', '.join(sorted(VM_SIZES))}")
        if self.vm_priority.lower() not in PRIORITIES:
            raise UserInputError(f"vm_priority must be one of {', '.join(PRIORITIES)}, "
                                 f"got {self.vm_priority!r}")
        for name in ("max_nodes", "min_nodes"):
            bounded_int(name, getattr(self, name), maximum=MAX_CLUSTER_NODES)
        bounded_int("idle_seconds_before_scaledown", self.idle_seconds_before_scaledown)
        if self.max_nodes < 1:
            raise UserInputError(f"max_nodes must be at least 1, got {self.max_nodes}")
        if self.min_nodes < 0:
            raise UserInputError(f"min_nodes cannot be negative, got {self.min_nodes}")
        if self.max_nodes < self.min_nodes:
            raise UserInputError(f"max_nodes ({self.max_nodes}) must be at least min_nodes "
                                 f"({self.min_nodes})")
        if self.idle_seconds_before_scaledown < 0:
            raise UserInputError("idle_seconds_before_scaledown cannot be negative")
        spec = TargetSpec(**{**asdict(self), "vm_size": vm_size,
                             "vm_priority": self.vm_priority.lower()})
        spec._check_capacity(host)
        return spec

    def _check_capacity(self, host):
        size, nodes = self.size, self.max_nodes
        cores, memory = size.cores * nodes, size.memory_gib * nodes * 2**30
        if (cores > len(host.cores) or memory > host.memory_bytes) and not self.allow_overcommit:
            raise UserInputError(
                f"{nodes} node(s) of {self.vm_size} need {cores} cores and {memory / 2**30:.1f} GiB; "
                f"this host has {host.describe()}: use a smaller --vm-size or --max-nodes, or "
                "--allow-overcommit to let the nodes share the host's cores and memory")
        gpus = size.gpus * nodes
        if gpus > len(host.gpus) and not self.emulate_gpus:
            raise UserInputError(
                f"{nodes} node(s) of {self.vm_size} need {gpus} GPU(s); this host has "
                f"{len(host.gpus)}: use a CPU size, fewer nodes, or --emulate-gpus to run them "
                "on the CPU")


def local_target():
    """The built-in target: one node that is the whole host (its size is the host's)."""
    return TargetSpec(name=LOCAL_TARGET, vm_size="LOCAL", max_nodes=1, min_nodes=0,
                      idle_seconds_before_scaledown=0, allow_overcommit=True, emulate_gpus=False)


class ComputeTargetRecords:
    """The compute targets recorded in one run history (a RunStore): the compute_targets table.

    The `_in` methods work inside a transaction the caller holds (store.transaction()), so that
    a target's record changes together with its nodes and queue.
    """

    def __init__(self, store):
        self.store = store

    def get(self, name):
        """The target's spec; ComputeTargetError if there is none."""
        if name == LOCAL_TARGET:
            return local_target()  # no row to read, and no write lock to wait for
        with self.store.transaction() as conn:
            spec = self._find_in(conn, name)
        if spec is None:
            raise ComputeTargetError(f"no compute target named {name!r} (create it with "
                                     f"`amlocal compute create {name} --vm-size ... --max-nodes ...`)")
        return spec

    def get_in(self, conn, name):
        """get inside the caller's transaction (the target of a queued run: it may be gone)."""
        spec = self._find_in(conn, name)
        if spec is None:
            raise ComputeTargetError(f"compute target {name!r} was deleted")
        return spec

    def names(self):
        """`local`, then the recorded targets by name."""
        with self.store.transaction() as conn:
            rows = conn.execute("SELECT name FROM compute_targets ORDER BY name").fetchall()
        return [LOCAL_TARGET] + [row["name"] for row in rows]

    def insert_in(self, conn, spec, now):
        """Record a new target (a validated spec); ComputeTargetError if the name is taken."""
        if conn.execute("SELECT 1 FROM compute_targets WHERE name = ?", (spec.name,)).fetchone():
            raise ComputeTargetError(f"compute target {spec.name!r} already exists "
                                     "(`amlocal compute show` it, or delete it first)")
        conn.execute(
            "INSERT INTO compute_targets (name, vm_size, vm_priority, min_nodes, max_nodes, "
            "idle_seconds_before_scaledown, allow_overcommit, emulate_gpus, created_at, "
            "modified_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (spec.name, spec.vm_size, spec.vm_priority, spec.min_nodes, spec.max_nodes,
             spec.idle_seconds_before_scaledown, int(spec.allow_overcommit),
             int(spec.emulate_gpus), now, now))

    def delete_in(self, conn, name):
        conn.execute("DELETE FROM compute_targets WHERE name = ?", (name,))

    def times_in(self, conn, name):
        """(created_at, modified_at) of a recorded target, or (None, None) (`local`)."""
        row = conn.execute("SELECT created_at, modified_at FROM compute_targets WHERE name = ?",
                           (name,)).fetchone()
        return (row["created_at"], row["modified_at"]) if row else (None, None)

    @staticmethod
    def _find_in(conn, name):
        if name == LOCAL_TARGET:
            return local_target()
        row = conn.execute("SELECT * FROM compute_targets WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        return TargetSpec(name=row["name"], vm_size=row["vm_size"], max_nodes=row["max_nodes"],
                          min_nodes=row["min_nodes"],
                          idle_seconds_before_scaledown=row["idle_seconds_before_scaledown"],
                          vm_priority=row["vm_priority"],
                          allow_overcommit=bool(row["allow_overcommit"]),
                          emulate_gpus=bool(row["emulate_gpus"]))
