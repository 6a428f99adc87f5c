"""The Observer gRPC server: a ring of flows, Hubble's filters, and replay of files into it."""
