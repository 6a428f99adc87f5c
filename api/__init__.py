"""The command line (and, later, the HTTP service and gRPC definitions)."""
