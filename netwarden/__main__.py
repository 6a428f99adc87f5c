"""Allow ``python -m netwarden``."""

from netwarden.api.cli import main

main()
