"""How the CLI shows things: run events as they happen, tables, JSON. The library never prints."""

import json
import os
import sys

import click

from amlocal.backends.base import LogLine, StageFinished, StageStarted


_stdout_closed = False


def echo_out(text, flush=False):
    """Write a line to stdout, unless its reader went away (`amlocal run ... | head`): from then
    on stdout output is dropped, and the run, its log and its status lines on stderr go on."""
    global _stdout_closed
    if _stdout_closed:
        return
    try:
        click.echo(text)
        if flush:
            sys.stdout.flush()
    except BrokenPipeError:
        _stdout_closed = True
        # What is still buffered could never be written either: point stdout at /dev/null, so
        # that neither a later write nor Python's flush at exit fails again.
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)


def echo_json(data):
    """One compact JSON document on one line (so `tail -n 1 | jq` works after streamed output)."""
    echo_out(json.dumps(data, default=str))


def echo_status(message):
    """Progress and stage lines go to stderr, so stdout carries only the script's output and data.
    A stderr that cannot be written (its reader is gone too) is no reason to stop."""
    try:
        click.echo(message, err=True)
    except OSError:
        pass


class EventPrinter:
    """Renders a run's events: stages on stderr, the script's output on stdout.

    The run id is announced before its first event, as Azure ML's `wait_for_completion` does.
    """

    def __init__(self, show_build_output=True):
        self.show_build_output = show_build_output
        self._announced = set()

    def __call__(self, event):
        if event.run_id not in self._announced:
            self._announced.add(event.run_id)
            echo_status(f"RunId: {event.run_id}")
        if isinstance(event, LogLine):
            if event.source == "driver":
                echo_out(event.line, flush=True)
                return
            elif self.show_build_output:
                echo_status(click.style(f"  | {event.line}", dim=True))
        elif isinstance(event, StageStarted):
            echo_status(f"[{event.stage}] started" + (f": {event.detail}" if event.detail else ""))
        elif isinstance(event, StageFinished):
            color = {"Completed": "green", "Failed": "red", "Canceled": "yellow"}.get(event.status)
            echo_status(f"[{event.stage}] {click.style(event.status, fg=color)} in "
                        f"{event.duration_s:.2f} s" + (f": {event.detail}" if event.detail else ""))
        # StatusChanged needs no line of its own: stages imply it and the summary ends with it.


def summary_line(details):
    status = details["status"]
    color = {"Completed": "green", "Failed": "red", "Canceled": "yellow"}.get(status)
    duration = f" in {details['duration_s']:.1f} s" if details.get("duration_s") is not None else ""
    return f"Run {details['id']} {click.style(status, fg=color, bold=True)}{duration}"


def table(rows, columns):
    """A plain text table: `columns` is [(header, key)], rows are dicts."""
    cells = [[str(header) for header, _ in columns]]
    cells += [["" if row.get(key) is None else str(row.get(key)) for _, key in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
                     for line in cells)


def format_value(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)
