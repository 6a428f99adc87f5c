"""eBPF programs and the bcc loader/agent that turns kernel events into Flows.

Importing this package never imports ``bcc``: the loader imports it lazily, so ``import
netwarden`` works on machines without BCC.
"""
