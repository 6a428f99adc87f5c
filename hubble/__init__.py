"""Hubble's gRPC Observer API: netwarden's .proto definitions and their generated stubs.

``flow_pb2`` (package ``flow``), ``relay_pb2`` (``relay``), ``observer_pb2`` and
``observer_pb2_grpc`` (``observer``); regenerate with ``make proto``.
"""
