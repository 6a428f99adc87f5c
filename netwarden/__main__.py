"""Allow ``python -m netwarden``."""

from netwarden.cli import main

main()
