"""`python -m offload` is the `offload` command."""

from offload.cli import main

main()
