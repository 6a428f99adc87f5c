"""The command line, the service (``netwarden serve``) and its HTTP API."""
