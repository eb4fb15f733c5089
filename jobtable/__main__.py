"""``python -m jobtable``: the command line."""

from jobtable.cli import main

main()
