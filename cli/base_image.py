"""`amlocal base-image ...`: base images for hosts that reach no container registry."""

import click

from amlocal.backends.local import images
from amlocal.cli.render import echo_json, echo_status


@click.group("base-image")
def base_image():
    """Base images that environment recipes build on."""


@base_image.command()
@click.option("--tag", default=images.DEBIAN_BASE_IMAGE, show_default=True)
@click.option("--suite", default="bookworm", show_default=True, help="Debian release.")
@click.option("--mirror", default=images.DEBIAN_MIRROR, show_default=True, help="Debian mirror.")
@click.option("--force", is_flag=True, help="Rebuild even when the tag exists.")
@click.option("--json", "as_json", is_flag=True)
def build(tag, suite, mirror, force, as_json):
    """Build a Python base image from Debian packages (mmdebstrap) and import it.

    For machines that reach a Debian mirror but no registry: recipes then build on it instead of
    python:3.11-slim-bookworm. Takes about 30 s.
    """
    from amlocal.backends.local import engine  # the Docker SDK, only when an image is built

    client = engine.connect()
    existing = None if force else images.local_image(client, tag)
    if existing is not None:
        echo_status(f"{tag} is already on this machine ({existing.short_id}); --force rebuilds it")
        image_id = existing.id
    else:
        image_id = images.build_debian_base(client, tag=tag, suite=suite, mirror=mirror,
                                            on_line=echo_status)
        echo_status(f"imported {tag}")
    if as_json:
        echo_json({"tag": tag, "id": image_id})
    else:
        click.echo(tag)
