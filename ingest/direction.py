"""Which end initiated a connection, and which subject a flow event counts for.

Hubble reports one connection several times: the client's node sees it leave (egress), the
server's node sees it arrive (ingress), and both see the replies. Counting every event for both
ends would double each connection. The rule netwarden applies, so that **each connection counts
once per subject**:

1. **Initiator and responder.** A flow with ``is_reply`` true (or the deprecated ``reply``
   true when ``is_reply`` is absent) travels from responder to initiator, so the initiator is its
   *destination*; otherwise the initiator is its *source*. Ports are swapped likewise: the
   service port is the destination port of a request and the source port of a reply.
2. **Whose observation it is.** Hubble's ``traffic_direction`` is the connection's direction as
   seen by the endpoint where the event was observed (it is not flipped for replies):
   ``EGRESS`` means that endpoint initiated the connection, ``INGRESS`` that it accepted it.
   An ``EGRESS`` event counts only for the initiator (its client side); an ``INGRESS`` event
   counts only for the responder (its server side). The other end's node reports its own view
   with the opposite direction, which counts for the other subject. So a pod-to-pod connection
   seen on both nodes counts once for the client and once for the server.
3. **Direction unknown** (drops often, field-masked exports always): the observation point
   decides when it is telling (``FROM_ENDPOINT`` = the source endpoint sending: client side of a
   request, server side of a reply; ``TO_ENDPOINT`` = the destination receiving: server side of a
   request, client side of a reply); otherwise the event counts for both ends, since such
   events (a drop) are reported once.
4. **Replies** add only what replies carry (SYN-ACK, RST, DNS rcode, HTTP status), never to flow,
   connection or peer counts.
5. **Policy-verdict events** (monitor type 5) repeat the first packet of a connection that a
   trace or drop event (types 4 and 1) also reports; trace-sock (7), capture (3, 6), debug (2)
   and agent (130) events are not traffic. None of these count; they are tallied separately.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "CLIENT",
    "NOT_COUNTED_EVENT_TYPES",
    "SERVER",
    "SIDES_TABLE",
    "counted_sides",
]

CLIENT: Final = 1
SERVER: Final = 2
BOTH: Final = CLIENT | SERVER

#: Monitor event types that are not counted as traffic (see rule 5).
NOT_COUNTED_EVENT_TYPES: Final = frozenset({2, 3, 5, 6, 7, 130})

_EGRESS: Final = ("EGRESS", 2)
_INGRESS: Final = ("INGRESS", 1)
_FROM_ENDPOINT: Final = ("FROM_ENDPOINT", 5)
_TO_ENDPOINT: Final = ("TO_ENDPOINT", 101)


def _build_table() -> dict[tuple[str | int, str | int, bool], int]:
    """Precompute (traffic_direction, observation point, is_reply) -> sides for the hot path."""
    table: dict[tuple[str | int, str | int, bool], int] = {}
    directions: tuple[str | int, ...] = ("EGRESS", 2, "INGRESS", 1, "TRAFFIC_DIRECTION_UNKNOWN", 0)
    points: tuple[str | int, ...] = (*_FROM_ENDPOINT, *_TO_ENDPOINT, 0, "UNKNOWN_POINT")
    for direction in directions:
        for point in points:
            for reply in (False, True):
                table[(direction, point, reply)] = _sides(direction, point, reply)
    return table


def _sides(direction: str | int, point: str | int, reply: bool) -> int:
    if direction in _EGRESS:
        return CLIENT
    if direction in _INGRESS:
        return SERVER
    if point in _FROM_ENDPOINT:  # the source endpoint is sending
        return SERVER if reply else CLIENT
    if point in _TO_ENDPOINT:  # the destination endpoint is receiving
        return CLIENT if reply else SERVER
    return BOTH


#: (traffic_direction, trace_observation_point, is_reply) -> sides, for the common values;
#: :func:`counted_sides` handles the rest.
SIDES_TABLE: Final = _build_table()


def counted_sides(direction: str | int, point: str | int, reply: bool) -> int:
    """Bit set of the sides (:data:`CLIENT`, :data:`SERVER`) an event counts for.

    >>> counted_sides("EGRESS", "FROM_ENDPOINT", False) == CLIENT
    True
    >>> counted_sides("INGRESS", "TO_STACK", True) == SERVER   # a server's reply leaving it
    True
    >>> counted_sides(0, 0, False) == CLIENT | SERVER           # a drop of unknown direction
    True
    """
    found = SIDES_TABLE.get((direction, point, reply))
    if found is None:
        found = _sides(direction, point, reply)
    return found
