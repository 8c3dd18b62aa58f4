"""`amlocal runs ...`: look at, follow, cancel and download from runs in the history."""

import click

from amlocal.backends.base import SYSTEM_METRIC_PREFIX
from amlocal.backends.history.run_folder import printable
from amlocal.backends.status import is_terminal
from amlocal.cli.backends import backends
from amlocal.cli.output import make_output_folder, output_folder, png_file
from amlocal.cli.render import EventPrinter, echo_json, format_value, summary_line, table
from amlocal.errors import AmlocalError, UserInputError
from amlocal.validation import MAX_INT, bounded_float

# The STATUS a damaged run gets in the `runs list` table (its JSON record says `corrupted`).
DAMAGED = "DAMAGED"

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


class Seconds(click.ParamType):
    """A duration in seconds: a finite number from 0 up to a year (FloatRange lets nan and inf in)."""

    name = "seconds"

    def convert(self, value, param, ctx):
        try:
            return bounded_float(param.opts[0] if param else "seconds", float(value), 0, 365 * 86400)
        except (TypeError, ValueError, AmlocalError) as error:
            self.fail(str(error), param, ctx)


class WaitTimeoutError(AmlocalError):
    """`runs wait --timeout` ran out; the run itself goes on."""

    exit_code = 124


def _handle(run_id):
    """The run's handle from the backend that ran it (an Azure run's goes to Azure)."""
    return backends().open_run(run_id)


@click.group()
def runs():
    """Runs in the local history ($AMLOCAL_HOME, default ~/.amlocal)."""


@runs.command("list")
@click.option("--experiment", help="Only runs of this experiment.")
@click.option("--limit", type=click.IntRange(min=1, max=MAX_INT), default=50, show_default=True)
@click.option("--refresh", is_flag=True,
              help="Ask Azure ML for the status of Azure runs that have not ended (else the "
                   "status last recorded is shown).")
@json_option
def list_runs(experiment, limit, refresh, as_json):
    """List runs, local and Azure ones, newest first."""
    history = backends().get()
    records = history.list_runs(experiment=experiment, limit=limit)
    remote = [index for index, record in enumerate(records)
              if record.get("backend", history.name) != history.name and "corrupted" not in record]
    for index in remote:
        # A run another backend ran (on Azure) is that backend's to describe: its record holds
        # its portal URL, and --refresh asks Azure for its status.
        handle = backends().get(records[index]["backend"]).get_run(records[index]["id"])
        records[index] = handle.get_details(refresh=refresh)
    damaged = [record for record in records if "corrupted" in record]
    for record in damaged:
        # Listed (and marked) with the others, and the listing exits 0; `runs show` of it exits 5.
        click.echo(f"Warning: {record['corrupted']}", err=True)
    if as_json:
        echo_json(records)
        return
    if not records:
        click.echo("No runs yet: start one with `amlocal run`.")
        return
    for record in damaged:
        record["status"] = DAMAGED
    columns = [("ID", "id"), ("EXPERIMENT", "experiment"), ("STATUS", "status"),
               ("BACKEND", "backend"), ("EXECUTOR", "executor"), ("CREATED", "created_at"),
               ("DURATION_S", "duration_s")]
    if remote:
        columns.append(("PORTAL_URL", "portal_url"))
    click.echo(table(records, columns))


@runs.command()
@click.argument("run_id")
@json_option
def show(run_id, as_json):
    """Show a run: status, stages with their timings, error, last metric values."""
    handle = _handle(run_id)
    details = handle.get_details()
    if details.get("sweep"):
        from amlocal.cli.sweep import sweep_view

        children_text, children_json = sweep_view(handle)
        details = {**details, **children_json}
    if not details.get("portal_url"):
        from amlocal.backends import run_page_url

        details = {**details, "page_url": run_page_url(details["id"])}  # while `amlocal ui` runs
    if as_json:
        echo_json(details)
        return
    click.echo(summary_line(details))
    waiting = handle.get_detailed_status()["details"]
    if waiting:
        click.echo(f"{'Waiting:':<12} {waiting}")
    for label, key in [("Experiment", "experiment"), ("Backend", "backend"),
                       ("Portal URL", "portal_url"), ("Run page", "page_url"),
                       ("Compute", "compute"),
                       ("Executor", "executor"), ("Image", "image"),
                       ("Script", "script"), ("Arguments", "arguments"), ("Inputs", "inputs"),
                       ("Created", "created_at"), ("Exit code", "exit_code")]:
        if details.get(key) not in (None, [], {}):
            click.echo(f"{label + ':':<12} {format_value(details[key])}")
    if details["stages"]:  # an Azure run's stages are on its portal page
        click.echo()
        click.echo(table(details["stages"], [("STAGE", "name"), ("STATUS", "status"),
                                             ("DURATION_S", "duration_s"), ("DETAIL", "detail")]))
    if details.get("sweep"):
        click.echo()
        click.echo(children_text)
    metrics = handle.get_metrics()
    if metrics:
        click.echo()
        click.echo(table([{"name": name, "last": format_value(values[-1]), "count": len(values)}
                          for name, values in metrics.items()],
                         [("METRIC", "name"), ("LAST", "last"), ("VALUES", "count")]))
    if details.get("error"):
        click.echo(f"\nError: {details['error']}")


@runs.command()
@click.argument("run_id")
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the run ends.")
def logs(run_id, follow):
    """Print the script's output (the driver log); with -f, follow a live run to its end."""
    handle = _handle(run_id)
    if not follow:
        for line in handle.stream_logs():
            click.echo(line)
        return
    details = handle.wait(on_event=EventPrinter(show_build_output=False))
    click.echo(summary_line(details), err=True)


@runs.command()
@click.argument("run_id")
@click.option("--timeout", type=Seconds(), metavar="SECONDS",
              help="Give up waiting after this long (the run goes on); exit code 124.")
@click.option("--quiet", is_flag=True, help="Do not print the run's output while waiting.")
@json_option
def wait(run_id, timeout, quiet, as_json):
    """Wait for a run (driven by any process) to end; exit 0 only if it Completed."""
    handle = _handle(run_id)
    printer = EventPrinter(show_build_output=False)
    try:
        details = handle.wait(on_event=(lambda event: None) if quiet or as_json else printer,
                              timeout=timeout)
    except TimeoutError as error:
        raise WaitTimeoutError(str(error)) from None
    if as_json:
        echo_json(details)
    else:
        click.echo(summary_line(details), err=True)
        if details["status"] != "Completed" and details.get("error"):
            click.echo(details["error"], err=True)
    if details["status"] != "Completed":
        raise click.exceptions.Exit(1)


@runs.command()
@click.argument("run_id")
@json_option
def metrics(run_id, as_json):
    """Metrics the run logged (run.log and mlflow.log_metric alike): each name with its values
    in logging order; then the run's system metrics (CPU, memory, GPU), under their own heading."""
    values_by_name = _handle(run_id).get_metrics()
    if as_json:
        echo_json(values_by_name)
        return
    system = {name: values for name, values in values_by_name.items()
              if name.startswith(SYSTEM_METRIC_PREFIX)}
    for name, values in values_by_name.items():
        if name not in system:
            click.echo(f"{name}: {', '.join(format_value(value) for value in values)}")
    if system:
        if len(system) < len(values_by_name):
            click.echo()
        click.echo("System metrics (sampled by amlocal while the script ran):")
        for name, values in system.items():
            click.echo(f"  {name}: {', '.join(format_value(value) for value in values)}")


@runs.command()
@click.argument("run_id")
@json_option
def files(run_id, as_json):
    """The run's files: outputs/, logs/ and azureml-logs/."""
    names = _handle(run_id).get_file_names()
    if as_json:
        echo_json(names)
        return
    for name in names:
        click.echo(printable(name))  # a name that is not UTF-8 shows its bytes as \xNN


@runs.command()
@click.argument("run_id")
@click.option("--prefix", help="Only files whose name starts with this (e.g. outputs/).")
@click.option("-o", "--output-dir", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Where to put them; each keeps its path in the run (outputs/model.npz, ...).")
@json_option
def download(run_id, prefix, output_dir, as_json):
    """Download run files into a folder."""
    handle = _handle(run_id)
    names = [name for name in handle.get_file_names() if not prefix or name.startswith(prefix)]
    if not names:
        raise UserInputError(f"run {run_id} has no files under {prefix!r} "
                             f"(see `amlocal runs files {run_id}`)")
    with output_folder(output_dir) as output_dir:
        try:
            paths = handle.download_files(prefix=prefix, output_directory=output_dir)
        except OSError as error:  # a name under -o that cannot be written (too long for its disk)
            raise UserInputError(f"cannot write into -o {output_dir}: {error.strerror or error}") from None
    if as_json:
        echo_json([str(path) for path in paths])
        return
    for path in paths:
        click.echo(printable(str(path)))


@runs.command()
@click.argument("run_id")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait until the run has stopped.")
@json_option
def cancel(run_id, wait, as_json):
    """Cancel a run: CancelRequested, the script gets SIGTERM (SIGKILL after 10 s), Canceled."""
    handle = _handle(run_id)
    if is_terminal(handle.get_status()):
        raise UserInputError(f"run {run_id} already ended {handle.get_status()}")
    handle.cancel()
    details = handle.wait() if wait else handle.get_details()
    if as_json:
        echo_json(details)
    else:
        click.echo(summary_line(details))


@runs.command()
@click.argument("run_ids", nargs=-1, metavar="RUN...")
@click.option("--metric", required=True, metavar="NAME", help="The scalar metric to draw.")
@click.option("-o", "--output", type=click.Path(), metavar="FILE.png",
              help="Where to write the chart [default: compare-<metric>.png].")
@json_option
def compare(run_ids, metric, output, as_json):
    """Draw one metric's curve in several runs on one chart (x: step, else logging order)."""
    if output:
        png_file(output)  # before matplotlib is imported: it writes caches under $HOME
    from amlocal.cli.report import write_compare_chart  # matplotlib only when charts are drawn

    path, values_by_run = write_compare_chart(backends().get(), list(run_ids), metric, output)
    if as_json:
        echo_json({"file": str(path), "runs": values_by_run})
        return
    click.echo(str(path))


@runs.command()
@click.argument("run_id")
@click.option("-o", "--output-dir", type=click.Path(), metavar="DIR",
              help="Folder for the report (DIR/index.html); created if missing.")
@json_option
def report(run_id, output_dir, as_json):
    """Write a self-contained HTML report of a run: stages, metrics and charts, files, log."""
    if not output_dir:
        raise UserInputError("give the folder to write the report to with -o DIR")
    handle = _handle(run_id)
    # Checked before matplotlib is imported (it writes caches under $HOME): a refused -o or run
    # id writes nothing.
    output_dir = make_output_folder(output_dir)
    from amlocal.cli.report import write_report  # matplotlib only when charts are drawn

    written = write_report(handle, output_dir)
    if as_json:
        echo_json(written)
        return
    click.echo(written["file"])
