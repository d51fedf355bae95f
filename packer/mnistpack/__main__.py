"""`python -m mnistpack`: the same command line as the `mnistpack` script."""

from mnistpack.cli import main

main()
