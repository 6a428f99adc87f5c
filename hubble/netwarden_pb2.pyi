from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ConnectionStats(_message.Message):
    __slots__ = ("bytes_sent", "bytes_received", "packets_sent", "packets_received", "duration_ns", "retransmits", "kernel_drop_reason", "kernel_drop_location", "pid", "comm", "netns", "cgroup_id")
    BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    PACKETS_SENT_FIELD_NUMBER: _ClassVar[int]
    PACKETS_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    DURATION_NS_FIELD_NUMBER: _ClassVar[int]
    RETRANSMITS_FIELD_NUMBER: _ClassVar[int]
    KERNEL_DROP_REASON_FIELD_NUMBER: _ClassVar[int]
    KERNEL_DROP_LOCATION_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    COMM_FIELD_NUMBER: _ClassVar[int]
    NETNS_FIELD_NUMBER: _ClassVar[int]
    CGROUP_ID_FIELD_NUMBER: _ClassVar[int]
    bytes_sent: int
    bytes_received: int
    packets_sent: int
    packets_received: int
    duration_ns: int
    retransmits: int
    kernel_drop_reason: str
    kernel_drop_location: str
    pid: int
    comm: str
    netns: int
    cgroup_id: int
    def __init__(self, bytes_sent: _Optional[int] = ..., bytes_received: _Optional[int] = ..., packets_sent: _Optional[int] = ..., packets_received: _Optional[int] = ..., duration_ns: _Optional[int] = ..., retransmits: _Optional[int] = ..., kernel_drop_reason: _Optional[str] = ..., kernel_drop_location: _Optional[str] = ..., pid: _Optional[int] = ..., comm: _Optional[str] = ..., netns: _Optional[int] = ..., cgroup_id: _Optional[int] = ...) -> None: ...
