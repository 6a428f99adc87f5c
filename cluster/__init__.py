"""Past one machine: node-local partial windows over NATS JetStream, merged by sharded detectors.

``partials`` is the wire format and the subject scheme, ``publisher`` the agent's side (a node's
partial windows, buffered within a bound while the server is away), ``node`` the agent's loop
(a live source into the node's windows, event time moved on while the node is quiet),
``metrics`` both sides' Prometheus metrics and their ``/metrics`` server, ``shard`` the detector's
side (merge per identity and window, close on the watermark, hand off, then acknowledge), and
``sinks`` where merged windows go (scoring into the store, or a file for inspection and tests).
"""
