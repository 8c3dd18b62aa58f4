"""`amlocal ui`: the run history in a browser (see amlocal.ui)."""

import click

from amlocal.validation import bounded_int

DEFAULT_PORT = 8765


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (loopback unless you say otherwise).")
@click.option("--port", default=DEFAULT_PORT, type=int, show_default=True,
              help="Port to listen on; 0 picks a free one.")
def ui(host, port):
    """Serve a web UI over this run history, in the foreground.

    \b
    The first line printed is the address to open:  http://HOST:PORT
    Pages: / (the runs), /runs/RUN_ID, /compare?runs=A,B, /compute, /models, /services.
    While it runs, `amlocal runs show` and Run.get_portal_url() name the run's page.
    It is read-only but for cancelling a run. Ctrl-C (or SIGTERM) stops it.
    """
    from amlocal.backends.history.store import default_home
    from amlocal.ui.server import is_loopback, serve

    bounded_int("--port", port, 0, 65535)
    home = default_home()

    def announce(url):
        click.echo(url)
        click.echo(f"amlocal UI over the run history {home} (Ctrl-C stops it)")
        if not is_loopback(host):
            click.echo(f"Warning: listening on {host}, not loopback: anyone who can reach it can "
                       "read this run history (and cancel runs from a page of it)", err=True)
        click.get_text_stream("stdout").flush()

    serve(home, host, port, announce)
