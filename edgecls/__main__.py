"""`python -m edgecls`: the same command line as the `edgecls` script."""

from edgecls.cli import main

main()
