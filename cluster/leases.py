"""Dynamic ownership of partitions: members and leases in a JetStream key-value bucket.

**Members.** Each shard has an id (its pod name) and registers ``member.<id>`` in the bucket
:data:`BUCKET`, rewritten every ``ttl / 4`` seconds (its heartbeat). A member is live while the
revision of its key keeps changing: one whose revision stayed the same for ``ttl`` seconds of
the observer's own clock has stopped (so no clocks need to agree); a shard that stops cleanly
deletes its key. A member heartbeats and renews its leases in the same round, so a member seen
stopped has not renewed a lease for about ``ttl`` either. The bucket's TTL (``4 * ttl``) removes what crashed members leave behind.

**Assignment.** The desired owner of partition ``p`` is a deterministic function of the live
member set: the members sorted (by name, numbers inside names by value, so ``shard-10`` comes
after ``shard-9``), ``p`` to ``members[p % len(members)]`` (:func:`assignment`). Every shard
computes it from what it reads; while views differ (a member just joined or left), a partition
still has at most one holder, since holding needs the lease.

**Leases.** ``lease.<p>`` names the shard holding ``p``. A shard takes ``p`` only by creating
the key (absent, or deleted by a holder that gave it up), or by a compare-and-set over a lease
whose holder is seen stopped, or whose revision did not change for ``ttl`` (nobody renews it),
or over its own (a restarted pod of the same name). It renews each lease every ``ttl / 4`` by compare-and-set
on the revision it holds; a renewal refused means another shard took the lease, and the
partition is dropped at once. A shard also stops using a lease it could not renew for
``ttl / 2`` (the server away), well before anybody else may take it over.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from nats.errors import Error as NatsError
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import (
    BadRequestError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoKeysError,
)
from nats.js.errors import Error as JetStreamError

__all__ = ["BUCKET", "LeaseConfig", "LeaseKeeper", "assignment", "member_order"]

_log = logging.getLogger(__name__)
BUCKET: Final = "netwarden-shards"
_MEMBER: Final = "member."
_LEASE: Final = "lease."
_KEY: Final = re.compile(r"[-/_=.a-zA-Z0-9]+")


def member_order(member: str) -> tuple[Any, ...]:
    """Sort key of a member id: text by text, numbers by value (``s-2`` before ``s-10``)."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", member))


def assignment(members: Iterable[str], partitions: int) -> dict[int, str]:
    """The desired owner of each partition: sorted members, ``p`` to ``members[p % n]``."""
    ordered = sorted(set(members), key=member_order)
    if not ordered:
        return {}
    return {p: ordered[p % len(ordered)] for p in range(partitions)}


@dataclass(frozen=True)
class LeaseConfig:
    """``member``: this shard's id (a pod name); ``partitions``: of the stream; ``ttl``: how
    long a silent member or an unrenewed lease stays valid, in seconds."""

    member: str
    partitions: int
    ttl: float = 15.0
    bucket: str = BUCKET

    def __post_init__(self) -> None:
        if not _KEY.fullmatch(self.member):
            raise ValueError(f"member id {self.member!r}: letters, digits, - _ = . / only")
        if self.partitions < 1 or self.ttl <= 0:
            raise ValueError("partitions must be >= 1 and the lease ttl > 0")

    @property
    def renew_every(self) -> float:
        return self.ttl / 4


class LeaseKeeper:
    """This shard's membership and leases; every method is one round of KV operations."""

    def __init__(self, config: LeaseConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.kv: Any = None
        #: partition -> (lease revision, when it was last created or renewed)
        self.held: dict[int, tuple[int, float]] = {}
        self._seen: dict[str, tuple[int, float]] = {}
        self._member_rev = 0
        self.members: list[str] = []
        #: Members whose key stopped changing for ttl: their leases may be taken at once.
        self.stopped: set[str] = set()

    @property
    def _value(self) -> bytes:
        return json.dumps({"holder": self.config.member}).encode()

    async def open(self, js: Any) -> None:
        cfg = self.config
        kv_config = KeyValueConfig(
            bucket=cfg.bucket, history=1, ttl=4 * cfg.ttl, storage=StorageType.FILE
        )
        try:
            self.kv = await js.create_key_value(kv_config)
        except BadRequestError:  # exists with other settings: use it as it is
            self.kv = await js.key_value(cfg.bucket)

    def fresh(self, partition: int) -> bool:
        """Held and renewed recently enough to consume and hand off."""
        held = self.held.get(partition)
        return held is not None and self.clock() - held[1] < self.config.ttl / 2

    def _unchanged_for(self, key: str, revision: int) -> float:
        """How long (this clock) ``key`` has been seen at ``revision``."""
        now = self.clock()
        seen = self._seen.get(key)
        if seen is None or seen[0] != revision:
            self._seen[key] = (revision, now)
            return 0.0
        return now - seen[1]

    async def heartbeat(self) -> list[str]:
        """Rewrite this member's key; return the live members (this one included)."""
        cfg = self.config
        self._member_rev = await self.kv.put(_MEMBER + cfg.member, self._value)
        try:
            keys = await self.kv.keys()
        except NoKeysError:
            keys = []
        live = [cfg.member]
        stopped = set()
        for key in keys:
            if not key.startswith(_MEMBER) or key == _MEMBER + cfg.member:
                continue
            try:
                entry = await self.kv.get(key)
            except (KeyNotFoundError, KeyDeletedError):
                continue
            if self._unchanged_for(key, entry.revision) < cfg.ttl:
                live.append(key[len(_MEMBER) :])
            else:
                stopped.add(key[len(_MEMBER) :])
        self.stopped = stopped
        self.members = sorted(live, key=member_order)
        return self.members

    def desired(self) -> set[int]:
        """The partitions the current member view assigns to this shard."""
        me = self.config.member
        return {p for p, m in assignment(self.members, self.config.partitions).items() if m == me}

    async def renew(self) -> list[int]:
        """Renew every lease held; return the partitions whose lease was lost (taken)."""
        lost = []
        for p, (revision, _) in sorted(self.held.items()):
            try:
                new = await self.kv.update(_LEASE + str(p), self._value, last=revision)
            except KeyWrongLastSequenceError:
                lost.append(p)
                del self.held[p]
                _log.warning("lease of partition %d lost (taken by another shard)", p)
                continue
            except (NatsError, JetStreamError, TimeoutError) as exc:
                _log.info("renewing the lease of partition %d: %s", p, exc)
                continue  # not fresh for long: fresh() stops its use
            self.held[p] = (new, self.clock())
        return lost

    async def acquire(self, partition: int) -> bool:
        """Take ``partition``'s lease if it is free, expired or this member's own."""
        key = _LEASE + str(partition)
        try:
            revision = await self.kv.create(key, self._value)
        except KeyWrongLastSequenceError:
            try:
                entry = await self.kv.get(key)
            except (KeyNotFoundError, KeyDeletedError):
                return False  # changed meanwhile: next round
            holder = json.loads(entry.value or b"{}").get("holder")
            # the holder stopped heartbeating (it renews in the same round), or nobody renewed
            # the lease for ttl (a holder whose member key is gone)
            unchanged = self._unchanged_for(key, entry.revision)
            expired = holder in self.stopped or unchanged >= self.config.ttl
            if holder != self.config.member and not expired:
                return False
            try:
                revision = await self.kv.update(key, self._value, last=entry.revision)
            except KeyWrongLastSequenceError:
                return False
            _log.warning(
                "took over the lease of partition %d from %s (%s)",
                partition,
                holder,
                "expired" if holder != self.config.member else "an earlier run of this member",
            )
        self.held[partition] = (revision, self.clock())
        return True

    async def release(self, partition: int) -> None:
        """Give ``partition`` up: delete its lease (if still ours)."""
        held = self.held.pop(partition, None)
        if held is None:
            return
        try:
            await self.kv.delete(_LEASE + str(partition), last=held[0])
        except (NatsError, JetStreamError, TimeoutError) as exc:
            _log.info("releasing partition %d: %s (expires by itself)", partition, exc)

    async def leave(self, partitions: Sequence[int] = ()) -> None:
        """Release ``partitions`` (all held when empty) and delete the member key."""
        for p in list(partitions or self.held):
            await self.release(p)
        try:
            await self.kv.delete(_MEMBER + self.config.member)
        except (NatsError, JetStreamError, TimeoutError) as exc:
            _log.info("leaving: %s", exc)
