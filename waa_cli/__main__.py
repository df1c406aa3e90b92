"""`python -m waa_cli` runs the same command as the `waa-eval` console script."""

from waa_cli.app import main

main()
