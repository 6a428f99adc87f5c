"""What the commands do, with progress bars and summaries; the command line (:mod:`netwarden.cli`)
only parses arguments, and the service reuses these for its bootstrap."""
