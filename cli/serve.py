"""`amlocal serve`: the local Azure ML service, for the real azureml-core (see amlocal.service)."""

import click

from amlocal.validation import bounded_int


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (loopback unless you say otherwise).")
@click.option("--port", default=0, type=int, show_default=True,
              help="Port to listen on; 0 picks a free one.")
def serve(host, port):
    """Serve this run history as an Azure ML workspace to azureml-core, in the foreground.

    \b
    The first line says where:  amlocal emulator listening on http://HOST:PORT
    While it runs, $AMLOCAL_HOME/emulator/config.json names the workspace and the endpoint;
    in Python, amlocal.emulator.workspace() gives an azureml.core.Workspace bound to it (and
    sets HTTPS_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE for blob uploads: config.json's
    "environment" lists them for other processes).
    Ctrl-C (or SIGTERM) stops it; runs on the local backend go on and are recorded.
    """
    from amlocal.backends.history.store import default_home
    from amlocal.service.server import serve as run_server

    bounded_int("--port", port, 0, 65535)

    def announce(endpoint):
        click.echo(f"amlocal emulator listening on {endpoint}")
        click.get_text_stream("stdout").flush()

    run_server(default_home(), host, port, announce)
