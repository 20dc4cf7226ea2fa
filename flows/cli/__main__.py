"""`python -m flows.cli`: the same as the `mlops` script."""

from flows.cli import main

main()
