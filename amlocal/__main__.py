"""`python -m amlocal` is the `amlocal` command."""

from amlocal.cli.main import main

main()
