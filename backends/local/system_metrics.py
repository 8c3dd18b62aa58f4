"""System metrics: a running script's CPU, memory and GPU use, sampled into its run's history.

The run's driver samples every AMLOCAL_SYSTEM_METRICS_S seconds (default 5; 0 turns it off), on
a thread of its own, from when the script starts until it has ended, and records each sample as
run metrics named with MLflow's convention for system metrics (so the UI and MLflow clients
show them as such), each value with the sample's number as its step:

    system/cpu_utilization_percentage      CPU time used over the interval, as a percentage of
                                           the cores the run may use (its node's; on `local`
                                           the host's): 100 is every one of them busy
    system/system_memory_usage_megabytes   the memory the script's processes use (MB, 10^6 B)
    system/system_memory_usage_percentage  ... of the memory the run may use (its limit)
    system/gpu_<i>_utilization_percentage  where nvidia-smi is there and the run was given
    system/gpu_<i>_memory_usage_megabytes  GPUs: each of its GPUs (i as the script numbers them)

Where the figures come from:
- docker executor: the Docker engine's stats of the run's container (one_shot, so a sample
  costs one API call and no wait); memory is the container's usage less its inactive page
  cache, as `docker stats` shows it;
- process executor: /proc of the script's process tree (the launcher and every process under
  it): utime + stime (+ what reaped children used), and the resident set sizes. No dependency
  for it: /proc is what psutil would read too, and amlocal runs only on Linux.
A sample that cannot be taken (the container is gone, the engine restarts) is skipped; the run
is never held up or failed by its metrics.
"""

import os
import shutil
import subprocess
import threading
import time

from amlocal.backends.base import SYSTEM_METRIC_PREFIX as PREFIX
from amlocal.backends.history.metric_batches import add_metric_batch
from amlocal.backends.local.compute import host_resources
from amlocal.validation import setting

CPU = PREFIX + "cpu_utilization_percentage"
MEMORY = PREFIX + "system_memory_usage_megabytes"
MEMORY_PERCENT = PREFIX + "system_memory_usage_percentage"
DEFAULT_INTERVAL_S = 5.0
_NO_NAME_LIMIT = 1 << 30  # the system's own metrics are not counted against a run's names
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
_NVIDIA_SMI_TIMEOUT_S = 5
_MIB = 1 << 20


def interval_s():
    """AMLOCAL_SYSTEM_METRICS_S: seconds between samples; 0: no system metrics."""
    return setting("AMLOCAL_SYSTEM_METRICS_S", DEFAULT_INTERVAL_S, 0, 3600)


class _Usage:
    """One reading: CPU seconds used so far, memory in use and its limit (bytes; None: unknown)."""

    def __init__(self, cpu_seconds, memory_bytes, memory_limit=None):
        self.cpu_seconds = cpu_seconds
        self.memory_bytes = memory_bytes
        self.memory_limit = memory_limit


# Where a container's cgroup is on this host, by cgroup version and Docker's cgroup driver:
# (CPU file, memory file, memory.stat file), each a format of the container's full id.
_CGROUP_LAYOUTS = (
    ("/sys/fs/cgroup/docker/{}/cpu.stat", "/sys/fs/cgroup/docker/{}/memory.current",
     "/sys/fs/cgroup/docker/{}/memory.stat"),
    ("/sys/fs/cgroup/system.slice/docker-{}.scope/cpu.stat",
     "/sys/fs/cgroup/system.slice/docker-{}.scope/memory.current",
     "/sys/fs/cgroup/system.slice/docker-{}.scope/memory.stat"),
    ("/sys/fs/cgroup/cpuacct/docker/{}/cpuacct.usage",
     "/sys/fs/cgroup/memory/docker/{}/memory.usage_in_bytes",
     "/sys/fs/cgroup/memory/docker/{}/memory.stat"),
    ("/sys/fs/cgroup/cpuacct/system.slice/docker-{}.scope/cpuacct.usage",
     "/sys/fs/cgroup/memory/system.slice/docker-{}.scope/memory.usage_in_bytes",
     "/sys/fs/cgroup/memory/system.slice/docker-{}.scope/memory.stat"),
)


def _cgroup_files(container_id):
    """The container's (CPU, memory, memory.stat) cgroup files on this host, or None (the
    engine is elsewhere, or lays its cgroups out otherwise)."""
    for layout in _CGROUP_LAYOUTS:
        files = tuple(path.format(container_id) for path in layout)
        if all(os.path.exists(path) for path in files):
            return files
    return None


def cgroup_usage(files):
    """A reading of a container's cgroup files (cgroup v2 or v1), as `docker stats` counts
    it: memory less the inactive page cache."""
    cpu_file, memory_file, stat_file = files
    with open(cpu_file) as handle:
        text = handle.read()
    if cpu_file.endswith("cpu.stat"):  # v2: "usage_usec N" among others
        cpu_seconds = int(dict(line.split() for line in text.splitlines())["usage_usec"]) / 1e6
    else:  # v1: nanoseconds
        cpu_seconds = int(text) / 1e9
    with open(memory_file) as handle:
        memory = int(handle.read())
    with open(stat_file) as handle:
        stat = dict(line.split() for line in handle.read().splitlines())
    cache = int(stat.get("total_inactive_file", stat.get("inactive_file", 0)))  # v1, v2
    return _Usage(cpu_seconds, max(memory - cache, 0))


def container_usage(container):
    """The run's container's usage, from the engine's stats (one reading; Docker 20.10 still
    takes about a second for it after the first)."""
    stats = container.stats(stream=False, one_shot=True)
    cpu = stats.get("cpu_stats", {}).get("cpu_usage", {}).get("total_usage")
    memory = stats.get("memory_stats", {})
    if cpu is None or "usage" not in memory:
        return None  # the container is not running (yet, or any more)
    details = memory.get("stats", {})
    cache = details.get("inactive_file", details.get("total_inactive_file", 0))
    return _Usage(cpu / 1e9, max(memory["usage"] - cache, 0), memory.get("limit"))


def _usage_together(readings):
    """One reading of several containers' (a distributed run's nodes); None if one has none."""
    if not readings or any(reading is None for reading in readings):
        return None
    if len(readings) == 1:
        return readings[0]
    limits = [reading.memory_limit for reading in readings]
    return _Usage(sum(reading.cpu_seconds for reading in readings),
                  sum(reading.memory_bytes for reading in readings),
                  sum(limits) if all(limits) else None)


def _process_table():
    """{pid: (parent pid, CPU ticks incl. reaped children's, resident pages)} of every process
    this host's /proc shows (those that end while it is read are left out)."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read().decode("ascii", "replace")
            with open(f"/proc/{entry.name}/statm", "rb") as handle:
                resident = int(handle.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        # The command name (field 2) may hold spaces and parentheses: fields follow its last ")".
        fields = stat[stat.rfind(")") + 2:].split()
        try:
            parent = int(fields[1])
            ticks = sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
        except (IndexError, ValueError):
            continue
        table[int(entry.name)] = (parent, ticks, resident)
    return table


def process_tree_usage(root_pid):
    """The usage of process `root_pid` and every process under it (None once it is gone)."""
    table = _process_table()
    if root_pid not in table:
        return None
    children = {}
    for pid, (parent, _ticks, _resident) in table.items():
        children.setdefault(parent, []).append(pid)
    tree, pending = [], [root_pid]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(children.get(pid, ()))
    return _Usage(sum(table[pid][1] for pid in tree) / _CLOCK_TICKS,
                  sum(table[pid][2] for pid in tree) * _PAGE_BYTES)


def gpu_readings(gpu_ids):
    """{name: value} for the GPUs `gpu_ids` (host indexes; the run numbers them from 0 in this
    order) from nvidia-smi; {} where there is none or it fails."""
    if not gpu_ids or shutil.which("nvidia-smi") is None:
        return {}
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,utilization.gpu,memory.used",
             "--format=csv,noheader,nounits", "-i", ",".join(str(gpu) for gpu in gpu_ids)],
            capture_output=True, text=True, timeout=_NVIDIA_SMI_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return {}
    by_host_index = {}
    for line in result.stdout.splitlines():
        parts = [part.strip() for part in line.split(",")]
        try:
            by_host_index[parts[0]] = (float(parts[1]), float(parts[2]))
        except (IndexError, ValueError):
            continue  # "[N/A]" on a GPU that does not report it
    readings = {}
    for ordinal, gpu in enumerate(gpu_ids):
        if str(gpu) in by_host_index:
            utilization, memory_mib = by_host_index[str(gpu)]
            readings[f"{PREFIX}gpu_{ordinal}_utilization_percentage"] = utilization
            readings[f"{PREFIX}gpu_{ordinal}_memory_usage_megabytes"] = memory_mib * _MIB / 1e6
    return readings


def _usable_cores(resources):
    if resources is not None and resources.cpuset:
        return len(resources.cpuset.split(","))
    if resources is not None and resources.nano_cpus:
        return resources.nano_cpus / 1e9
    return len(host_resources().cores)


class SystemMetrics:
    """Samples one running script (a started jobs.Job: a docker job's `container`, a process
    job's `pid`) into run `run_id` of `store`; `resources` (compute.NodeResources, or None) says
    what the run may use. `start()` returns at once; `stop()` ends the sampling, waited for."""

    def __init__(self, store, run_id, job, resources=None, interval=None):
        self.store = store
        self.run_id = run_id
        self.resources = resources
        self.interval = interval_s() if interval is None else interval
        # A distributed run's job has a container per node: the run's use is theirs together,
        # against the nodes' resources together.
        containers = list(getattr(job, "containers", None) or ())
        if getattr(job, "container", None) is not None:
            containers = [job.container]
        pid = getattr(job, "pid", None)
        self._read = None
        if containers:
            self._read = lambda: _usage_together(
                [self._container_usage(container) for container in containers])
        elif pid:
            self._read = lambda: process_tree_usage(pid)
        self._cgroups = {}  # container id -> its cgroup files, () where the engine is asked
        self._stopping = threading.Event()
        self._thread = None
        self.samples = 0

    def start(self):
        if self.interval > 0 and self._read is not None:
            self._thread = threading.Thread(target=self._sample_until_stopped, daemon=True,
                                            name=f"amlocal-system-metrics-{self.run_id}")
            self._thread.start()
        return self

    def stop(self):
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(self.interval + _NVIDIA_SMI_TIMEOUT_S)

    def _container_usage(self, container):
        """From the container's cgroup files where this host has them (microseconds), else
        from the engine's stats API."""
        if container.id not in self._cgroups:
            self._cgroups[container.id] = _cgroup_files(container.id) or ()
        if self._cgroups[container.id]:
            try:
                return cgroup_usage(self._cgroups[container.id])
            except (OSError, ValueError, KeyError):
                # gone, or not what was expected: ask the engine from now on
                self._cgroups[container.id] = ()
        return container_usage(container)

    def _sample_until_stopped(self):
        cores = _usable_cores(self.resources)
        memory_limit = (self.resources.memory_bytes if self.resources is not None and
                        self.resources.memory_bytes else None) or host_resources().memory_bytes
        gpu_ids = list(self.resources.gpu_ids) if self.resources is not None else []
        previous = None
        next_sample = time.monotonic()
        while True:
            try:
                previous = self._sample(previous, cores, memory_limit, gpu_ids)
            except Exception:  # noqa: BLE001 - a lost sample must never touch the run
                previous = None
            # On a schedule, so that a slow reading (the engine's stats) does not stretch it.
            next_sample = max(next_sample + self.interval, time.monotonic())
            if self._stopping.wait(next_sample - time.monotonic()):
                return

    def _sample(self, previous, cores, memory_limit, gpu_ids):
        """Take a reading and record it against the one before; return (time, reading)."""
        usage, now = self._read(), time.time()
        if usage is None:
            return previous
        if previous is not None:
            then, before = previous
            busy = max(usage.cpu_seconds - before.cpu_seconds, 0) / max(now - then, 1e-6)
            limit = min(filter(None, (usage.memory_limit, memory_limit)), default=None)
            values = {CPU: round(min(busy / cores * 100, 100.0), 2),
                      MEMORY: round(usage.memory_bytes / 1e6, 3)}
            if limit:
                values[MEMORY_PERCENT] = round(usage.memory_bytes / limit * 100, 2)
            values.update(gpu_readings(gpu_ids))
            add_metric_batch(self.store, self.run_id,
                             {name: [("scalar", value, self.samples, now)]
                              for name, value in values.items()}, _NO_NAME_LIMIT)
            self.samples += 1
        return now, usage
