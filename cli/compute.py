"""`amlocal compute ...`: compute targets that behave like AmlCompute clusters, on this host."""

import click

from amlocal.backends.registries import (DEFAULT_IDLE_SECONDS, LOCAL_TARGET, PRIORITIES,
                                         ComputeTargetError)
from amlocal.cli.backends import backends
from amlocal.cli.render import echo_json, table
from amlocal.errors import UserInputError
from amlocal.validation import MAX_INT

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
NODE_STATES = ("preparing", "running", "idle", "unusable", "leaving", "preempted")
_MOST_NODES_SHOWN = 1024


def _targets():
    """The compute targets of the default backend (the factory's: see cli/backends.py)."""
    return backends().get().compute_targets()


def _node_counts(status):
    return {state: status["nodeStateCounts"][f"{state}NodeCount"] for state in NODE_STATES}


def _nodes_text(counts):
    shown = [f"{count} {state}" for state, count in counts.items() if count]
    return ", ".join(shown) if shown else "0"


@click.group()
def compute():
    """Compute targets: AmlCompute-like clusters of nodes that are slots of this host.

    A target has a VM size (its nodes get that size's cores, memory and GPUs) and scales between
    --min-nodes and --max-nodes; runs wait for its nodes in one first-come-first-served queue.
    `local` is built in: one node that is the whole host.
    """


@compute.command()
@click.argument("name")
@click.option("--vm-size", required=True,
              help="An Azure VM size, e.g. STANDARD_D2_V2 (see `amlocal compute sizes`).")
@click.option("--max-nodes", type=int, required=True, help="Most nodes the target scales up to.")
@click.option("--min-nodes", type=int, default=0, show_default=True,
              help="Nodes kept even when idle (created idle now).")
@click.option("--idle-seconds-before-scaledown", type=int, default=DEFAULT_IDLE_SECONDS,
              show_default=True, help="How long a node idles before it is removed.")
@click.option("--vm-priority", type=click.Choice(PRIORITIES), default="dedicated",
              show_default=True,
              help="lowpriority nodes can be preempted (`amlocal compute preempt`).")
@click.option("--allow-overcommit", is_flag=True,
              help="Accept more cores or memory than this host has: the nodes share the host, "
                   "each limited to its size's CPU time and memory.")
@click.option("--emulate-gpus", is_flag=True,
              help="Accept a GPU size on a host with fewer GPUs: its runs see no GPU and use "
                   "the CPU.")
@json_option
def create(name, vm_size, max_nodes, min_nodes, idle_seconds_before_scaledown, vm_priority,
           allow_overcommit, emulate_gpus, as_json):
    """Create compute target NAME; refused when its nodes do not fit this host (unless told)."""
    targets = _targets()
    spec = targets.create_target(
        name, vm_size, max_nodes, min_nodes=min_nodes,
        idle_seconds_before_scaledown=idle_seconds_before_scaledown, vm_priority=vm_priority,
        allow_overcommit=allow_overcommit, emulate_gpus=emulate_gpus)
    if as_json:
        echo_json(targets.describe(spec.name))
        return
    extras = [flag for flag, on in (("overcommit allowed", spec.allow_overcommit),
                                    ("GPUs emulated on the CPU", spec.emulate_gpus)) if on]
    click.echo(f"Created compute target {spec.name}: {spec.min_nodes} to {spec.max_nodes} node(s) "
               f"of {spec.vm_size} ({spec.vm_priority}), scaled down after "
               f"{spec.idle_seconds_before_scaledown} s idle"
               + (f"; {', '.join(extras)}" if extras else ""))


@compute.command("list")
@json_option
def list_targets(as_json):
    """List compute targets (`local` first): size, scale settings, nodes by state, queued runs."""
    targets = _targets()
    rows = []
    for name in targets.names():
        try:
            described = targets.describe(name)
        except ComputeTargetError:
            continue  # deleted meanwhile
        rows.append({
            "name": name,
            "vm_size": described["vm_size"],
            "vm_priority": described["vm_priority"],
            "min_nodes": described["min_nodes"],
            "max_nodes": described["max_nodes"],
            "current_node_count": described["status"]["currentNodeCount"],
            "node_state_counts": _node_counts(described["status"]),
            "queued_runs": len(described["queue"]),
            "allow_overcommit": described["allow_overcommit"],
            "emulate_gpus": described["emulate_gpus"],
        })
    if as_json:
        echo_json(rows)
        return
    click.echo(table([dict(row, nodes=_nodes_text(row["node_state_counts"])) for row in rows],
                     [("NAME", "name"), ("VM_SIZE", "vm_size"), ("PRIORITY", "vm_priority"),
                      ("MIN", "min_nodes"), ("MAX", "max_nodes"), ("NODES", "nodes"),
                      ("QUEUED", "queued_runs")]))


@compute.command()
@click.argument("name")
@json_option
def show(name, as_json):
    """Show a compute target: settings, node size, its nodes and the runs queued for it."""
    described = _targets().describe(name)
    if as_json:
        echo_json(described)
        return
    status = described["status"]
    size = described["node_size"]
    per_node = (f"{size['cores']} cores, {size['memory_gib']:g} GiB"
                + (f", {size['gpus']} {size['gpu_model']} GPU(s)" if size["gpus"] else "")
                if "cores" in size else size["host"])
    lines = [
        ("Name", described["name"]),
        ("VM size", f"{described['vm_size']} ({per_node} per node)"),
        ("Priority", described["vm_priority"]),
        ("Nodes", f"{described['min_nodes']} to {described['max_nodes']}, scaled down after "
                  f"{described['idle_seconds_before_scaledown']} s idle"),
        ("Overcommit", "allowed" if described["allow_overcommit"] else "no"),
        ("GPUs", "emulated on the CPU" if described["emulate_gpus"] else "real"),
        ("Allocation", f"{status['allocationState']}: {status['currentNodeCount']} node(s) now"
                       + (f" ({_nodes_text(_node_counts(status))})" if status["currentNodeCount"]
                          else "") + f", {status['targetNodeCount']} wanted"),
        ("Created", status["creationTime"]),
    ]
    for label, value in lines:
        if value is not None:
            click.echo(f"{label + ':':<12} {value}")
    if described["nodes"]:
        click.echo()
        click.echo(table(described["nodes"], [("NODE_ID", "node_id"), ("SLOT", "slot"),
                                              ("STATE", "state"), ("RUN_ID", "run_id")]))
    if described["queue"]:
        click.echo()
        click.echo(f"Queued runs, first to be served first: {', '.join(described['queue'])}")


@compute.command()
@click.argument("name")
def delete(name):
    """Delete a compute target; refused while runs are running on it or queued for it."""
    _targets().delete(name)
    click.echo(f"Deleted compute target {name}")


def _fit(targets, vm_size, nodes):
    """The `compute create` flags that `nodes` nodes of vm_size need on this host ([]: none)."""
    flags = targets.fitting_flags(vm_size, nodes)
    if flags is None:
        raise AssertionError(f"{vm_size}: with both flags any node count fits")
    return ["--" + flag.replace("_", "-") for flag in flags]


def _most_nodes(targets, vm_size):
    """How many nodes of vm_size this host holds without either flag."""
    nodes = 0
    while nodes < _MOST_NODES_SHOWN and not _fit(targets, vm_size, nodes + 1):
        nodes += 1
    return nodes


@compute.command()
@click.option("--nodes", type=click.IntRange(min=1, max=MAX_INT), default=1, show_default=True,
              help="Check whether this many nodes of each size fit this host.")
@json_option
def sizes(nodes, as_json):
    """The VM sizes a target can have: cores, memory and GPUs per node, and what fits this host."""
    targets = _targets()
    host = targets.host_summary()
    rows = []
    for vm_size, size in targets.vm_sizes().items():
        needs = _fit(targets, vm_size, nodes)
        rows.append({"vm_size": vm_size, **size,
                     "most_nodes_on_host": _most_nodes(targets, vm_size),
                     "fits": not needs, "needs": needs})
    if as_json:
        echo_json({"host": {key: host[key] for key in ("cores", "memory_gib", "gpus")},
                   "nodes": nodes, "sizes": rows})
        return
    click.echo(f"This host: {host['text']}")
    click.echo(table([dict(row, memory_gib=f"{row['memory_gib']:g}",
                           fit="yes" if row["fits"] else f"with {' '.join(row['needs'])}")
                      for row in rows],
                     [("VM_SIZE", "vm_size"), ("CORES", "cores"), ("MEMORY_GIB", "memory_gib"),
                      ("GPUS", "gpus"), ("GPU", "gpu_model"), ("MOST_NODES", "most_nodes_on_host"),
                      (f"{nodes}_NODE{'S' if nodes > 1 else ''}_FIT", "fit")]))


@compute.command()
@click.argument("name")
@click.option("--run", "run_id", help="Preempt only this run's nodes.")
@json_option
def preempt(name, run_id, as_json):
    """Preempt the nodes of a low-priority target, as Azure does, to test checkpoint/resume code.

    amlocal's knob (Azure decides preemption itself): the nodes of the target's running runs
    (or of --run RUN_ID only) are taken away; each run's script is stopped as a cancel would
    stop it, and the run goes back to Queued at the head of the queue, to start again when nodes
    are free, with what it wrote to ./outputs kept. Dedicated targets are never preempted.
    """
    if name == LOCAL_TARGET:
        raise UserInputError("'local' is the built-in target: only low-priority targets are "
                             "preempted")
    preempted = _targets().preempt(name, run_id)
    if as_json:
        echo_json({"target": name, "preempted_runs": preempted})
    elif preempted:
        click.echo(f"Preempted the nodes of {len(preempted)} run(s) on {name}: "
                   f"{', '.join(preempted)}; they go back to the head of the queue")
    else:
        click.echo(f"No run is running on {name}: nothing to preempt")
