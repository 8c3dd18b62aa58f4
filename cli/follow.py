"""The one path from a submitted run (or sweep) to its end on this terminal, shared by
`amlocal run` and `amlocal sweep`: --detach, following it, Ctrl-C (twice) and SIGTERM, the
summary, --json and the exit code."""

import signal

import click

from amlocal.cli.render import echo_json, echo_status, summary_line


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def follow_interruptibly(handle, follow, noun="run"):
    """`follow(canceling)` until the run ends, and return its details (`canceling` is True once
    this process has asked for it to be canceled).

    Ctrl-C, or `kill` (SIGTERM) of this process, cancels the run (the script gets SIGTERM), so
    that it ends Canceled, never orphaned in Running; a second Ctrl-C kills it at once.
    """
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        return follow(False)
    except KeyboardInterrupt:
        echo_status(f"Canceling {noun} {handle.id} (the script gets SIGTERM; Ctrl-C again to kill "
                    "it now) ...")
        handle.cancel()
        try:
            return follow(True)
        except KeyboardInterrupt:
            echo_status(f"Killing {noun} {handle.id} ...")
            handle.cancel(force=True)
            return follow(True)


def submit_and_follow(submit, follow, detach, as_json, noun="run", extra=None,
                      follow_with="runs logs {id} -f"):
    """Submit with `submit()` (which returns the handle), then follow it to its end.

    `follow(handle, canceling)` waits for the run, showing what it shows, and returns its
    details (see follow_interruptibly);
    `extra(handle, details)`, if given, shows what the summary is followed by and returns more
    fields for --json (a sweep's children). With `detach`, this returns once the run is
    submitted, printing its id (or, with --json, its record) and `follow_with`, the command
    that follows it from another terminal. Exits 1 unless it Completed.
    """
    handle = submit()
    if detach:
        details = handle.get_details()
        echo_status(f"RunId: {handle.id} submitted; follow it with "
                    f"`amlocal {follow_with.format(id=handle.id)}`")
        if details.get("portal_url"):
            echo_status(f"Web View: {details['portal_url']}")
        if as_json:
            echo_json(details)
        else:
            click.echo(handle.id)
        return
    details = follow_interruptibly(handle, lambda canceling: follow(handle, canceling), noun)
    echo_status(summary_line(details))
    if details["status"] != "Completed" and details.get("error"):
        echo_status(details["error"])
    more = extra(handle, details) if extra else {}
    if as_json:
        echo_json({**details, **more})
    if details["status"] != "Completed":
        raise click.exceptions.Exit(1)
