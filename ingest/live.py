"""Live flow sources for ``netwarden serve``: one interface for every stream of flows.

A :class:`LiveSource` blocks in ``run``, handing batches of decoded flows to ``emit`` as they
arrive, until ``stop`` is set or the input ends. Here:

* :class:`FollowFile`: a growing Hubble JSON file followed like ``tail -F`` (waits for it to
  appear, survives rotation and truncation);
* :class:`StreamSource`: a pipe or stdin, read until end of input;
* :class:`GeneratorSource`: the built-in traffic generator in real time, with scheduled attacks;
* :func:`open_source`: the factory behind ``netwarden serve SOURCE``.

Every source decodes through :meth:`FlowReader.decode_lines`, so its flows are exactly what
reading the same lines from a file gives, and a bad line is counted in ``stats`` by reason with
its ``name:line``, never raised. The Hubble gRPC source (:mod:`netwarden.ingest.hubble`) and
the eBPF source (:mod:`netwarden.bpf.source`) implement the same protocol.
"""

from __future__ import annotations

import inspect
import os
import select
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from netwarden.ingest.compact import CompactFlow
from netwarden.ingest.generator.labels import AttackLabel
from netwarden.ingest.generator.realtime import RealtimeGenerator
from netwarden.ingest.reader import MAX_LINE_BYTES, ErrorReason, FlowReader, ReadStats

__all__ = ["FollowFile", "GeneratorSource", "LiveSource", "SourceStatus", "StreamSource",
           "open_source"]

_BLOCK_BYTES = 1 << 16
Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """A live source as the service sees it now."""

    kind: str  # "file", "stdin", "generator", "hubble", "ebpf"
    name: str  # what it reads, e.g. the file path
    up: bool  # connected / readable and not failed
    error: str | None = None  # why it is down, in words
    flows: int = 0  # flows delivered since start
    last_flow_at: datetime | None = None  # wall-clock time of the last delivered batch (UTC)


class LiveSource(Protocol):
    """A stream of decoded flows. ``run`` blocks, calling ``emit`` with batches of flows in
    arrival order until ``stop`` is set or the source ends; ``emit`` may block, which is how a
    slow consumer pushes back. Bad input never raises: it is counted in ``stats``."""

    kind: str
    name: str
    stats: ReadStats

    def status(self) -> SourceStatus: ...

    def run(self, emit: Callable[[list[Any]], None], stop: threading.Event) -> None: ...


# -- shared pieces ------------------------------------------------------------------------------
class _LineSplitter:
    """Cuts bytes as they arrive into complete, numbered lines.

    A partial last line is kept until its newline arrives (or :meth:`finish` says no more will);
    a line longer than ``MAX_LINE_BYTES`` is counted as ``line_too_long`` and skipped, bounding
    memory as the file reader does.
    """

    def __init__(self, stats: ReadStats, name: str, first_line: int = 1, *,
                 skip_first: bool = False) -> None:
        self.stats = stats
        self.name = name
        self.line_no = first_line  # number of the next complete line
        self._carry = b""
        self._skipping = skip_first  # discarding up to the next newline
        self._skip_counts = False  # the skipped line was too long (it was counted already)

    def feed(self, data: bytes) -> tuple[int, list[bytes]]:
        """(number of the first line, the complete lines that ``data`` finishes)."""
        if self._skipping:
            cut = data.find(b"\n")
            if cut < 0:
                return self.line_no, []
            data = data[cut + 1:]
            self._skipping = False
            self.line_no += 1
        buf = self._carry + data if self._carry else data
        cut = buf.rfind(b"\n")
        if cut < 0:
            self._carry = buf
            if len(buf) > MAX_LINE_BYTES:
                self.stats.lines += 1
                self.stats.record_error(self.name, self.line_no, ErrorReason.LINE_TOO_LONG,
                                        f"line longer than {MAX_LINE_BYTES:,} bytes")
                self._carry = b""
                self._skipping = True
            return self.line_no, []
        lines = buf[:cut].split(b"\n")
        self._carry = buf[cut + 1:]
        first = self.line_no
        self.line_no += len(lines)
        return first, lines

    def finish(self) -> tuple[int, list[bytes]]:
        """The unterminated last line as a final line (its input has ended), if there is one."""
        carry, self._carry = self._carry, b""
        first = self.line_no
        if not carry or self._skipping:
            self._skipping = False
            return first, []
        self.line_no += 1
        return first, [carry]

    @property
    def partial_bytes(self) -> int:
        return len(self._carry)


class _Source:
    """What every source shares: the reader, delivery in batches, and the status fields."""

    kind = "source"

    def __init__(self, name: str, *, batch_lines: int, clock: Clock, max_examples: int,
                 flow_type: type[Any] = CompactFlow) -> None:
        if batch_lines < 1:
            raise ValueError(f"batch_lines must be >= 1, got {batch_lines}")
        self.name = name
        self.batch_lines = batch_lines
        self.reader: FlowReader[Any] = FlowReader(flow_type=flow_type, batch_lines=batch_lines,
                                                  max_examples=max_examples)
        self.stats = self.reader.stats
        self._clock = clock
        self._up = False
        self._error: str | None = "not started"
        self._flows = 0
        self._last_flow_at: datetime | None = None

    def status(self) -> SourceStatus:
        return SourceStatus(self.kind, self.name, self._up, self._error, self._flows,
                            self._last_flow_at)

    def _set_state(self, up: bool, error: str | None = None) -> None:
        self._up, self._error = up, error

    def _decode(self, first_line: int, lines: list[bytes]) -> list[Any]:
        return self.reader.decode_lines(lines, first_line, self.name) if lines else []

    def _deliver(self, flows: list[Any], emit: Callable[[list[Any]], None]) -> None:
        """Hand ``flows`` over in batches of at most ``batch_lines``; all of them, even when
        stopping, since they have been consumed from the input."""
        size = self.batch_lines
        for i in range(0, len(flows), size):
            batch = flows[i:i + size]
            emit(batch)
            self._flows += len(batch)
            self._last_flow_at = self._clock()


# -- a followed file ----------------------------------------------------------------------------
class FollowFile(_Source):
    """A Hubble JSON lines file followed like ``tail -F``.

    Waits for the file to appear (status down with "waiting for PATH to appear"), reads what is
    there (from the start, or from the end with ``from_start=False``: only lines written after
    that are read, numbered as in the file, which costs one read of what is there to count its
    lines; a file that appears later is read from its start), then polls for appended data
    every ``poll_interval`` seconds. A partial last line waits for its newline. Rotation (``PATH`` now
    names another file) finishes the old file, then reads the new one from its start
    (``rotations``); truncation (the size drops below what was read) restarts from offset 0
    (``truncations``); in both cases a partial line left over is decoded as the file's last
    line, as for a file that ends without a newline. A file truncated and refilled past the
    read offset between two polls cannot be told from appended data (as for ``tail``).

    Plain text only: gzip is for finished files (``netwarden ingest`` reads them); a followed
    file is by nature still being written, which a compressed stream cannot be read during.
    """

    kind = "file"

    def __init__(self, path: str | Path, *, from_start: bool = True, poll_interval: float = 0.25,
                 batch_lines: int = 64, clock: Clock = _utcnow, max_examples: int = 5) -> None:
        super().__init__(str(path), batch_lines=batch_lines, clock=clock,
                         max_examples=max_examples)
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be > 0 seconds, got {poll_interval!r}")
        self.path = Path(path)
        self.from_start = from_start
        self.poll_interval = poll_interval
        self.rotations = 0
        self.truncations = 0
        self.offset = 0  # bytes of the current file read so far
        self._file: BinaryIO | None = None
        self._ident: tuple[int, int] | None = None
        self._lines: _LineSplitter | None = None

    def run(self, emit: Callable[[list[Any]], None], stop: threading.Event) -> None:
        at_end = not self.from_start  # only for a file already there at startup
        try:
            while not stop.is_set():
                if self._file is None:
                    opened = self._open(at_end=at_end)
                    at_end = False  # a file that appears or replaces it is read from its start
                    if not opened:
                        stop.wait(self.poll_interval)
                        continue
                if self._read_some(emit):
                    continue
                if self._rotated():  # finish the old file; the new one opens on the next pass
                    while self._read_some(emit):
                        pass
                    self._finish(emit)
                    self._close()
                    self.rotations += 1
                    continue
                if self._truncated():
                    self._finish(emit)
                    assert self._file is not None
                    self._file.seek(0)
                    self.offset = 0
                    self._lines = _LineSplitter(self.stats, self.name)
                    self.truncations += 1
                    continue
                stop.wait(self.poll_interval)
        finally:
            self._close()
            self._set_state(False, "stopped")

    # -- steps ----------------------------------------------------------------------------------
    def _open(self, *, at_end: bool) -> bool:
        try:
            f: BinaryIO = open(self.path, "rb", buffering=0)  # noqa: SIM115 - closed in _close
        except FileNotFoundError:
            self._set_state(False, f"waiting for {self.path} to appear")
            return False
        except IsADirectoryError:
            self._set_state(False, f"{self.path} is a directory, expected a flow file")
            return False
        except OSError as exc:
            self._set_state(False, f"cannot open {self.path}: {exc.strerror or exc}")
            return False
        st = os.fstat(f.fileno())
        self._file, self._ident = f, (st.st_dev, st.st_ino)
        self.offset = 0
        first_line, partial = 1, False
        if at_end and st.st_size:
            first_line, partial = self._skip_to(f, st.st_size)
        self._lines = _LineSplitter(self.stats, self.name, first_line, skip_first=partial)
        self._set_state(True)
        return True

    def _skip_to(self, f: BinaryIO, size: int) -> tuple[int, bool]:
        """Position at ``size`` and count the lines before it, so line numbers stay those of the
        file; True when ``size`` falls inside a line (its rest is skipped, not misread)."""
        newlines = 0
        last = b"\n"
        while self.offset < size:
            block = f.read(min(_BLOCK_BYTES, size - self.offset))
            if not block:
                break
            newlines += block.count(b"\n")
            last = block[-1:]
            self.offset += len(block)
        return newlines + 1, last != b"\n"

    def _read_some(self, emit: Callable[[list[Any]], None]) -> bool:
        """Read and deliver what has been appended; False at the end of the data.

        A read error is counted once per episode and retried at the next poll (the descriptor
        and offset are kept, so nothing is read twice).
        """
        assert self._file is not None and self._lines is not None
        try:
            data = self._file.read(_BLOCK_BYTES)
        except OSError as exc:
            if self._up:
                self.stats.record_error(self.name, self._lines.line_no, ErrorReason.UNREADABLE,
                                        f"cannot read further: {exc}")
            self._set_state(False, f"cannot read {self.path}: {exc.strerror or exc}")
            return False
        if not self._up:
            self._set_state(True)
        if not data:
            return False
        self.offset += len(data)
        self._deliver(self._decode(*self._lines.feed(data)), emit)
        return True

    def _finish(self, emit: Callable[[list[Any]], None]) -> None:
        if self._lines is not None:
            self._deliver(self._decode(*self._lines.finish()), emit)

    def _rotated(self) -> bool:
        """PATH names another file now (a missing PATH is not yet a rotation: keep reading)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) != self._ident

    def _truncated(self) -> bool:
        assert self._file is not None
        try:
            return os.fstat(self._file.fileno()).st_size < self.offset
        except OSError:
            return False

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file = None


# -- a pipe or stdin ----------------------------------------------------------------------------
class StreamSource(_Source):
    """Hubble JSON lines from a pipe, socket or stdin, read until end of input.

    Reads the stream's file descriptor directly (``os.read`` after ``poll``), so every chunk a
    writer sends is decoded and emitted at once instead of waiting for a 64 KiB block, and
    ``stop`` is noticed within ``poll_interval`` even while no data comes. Pass a stream nothing
    has read from yet: bytes already buffered in the Python object are not seen. Objects without
    a descriptor (``io.BytesIO``) are read with ``read1``. Plain text only (pipe gzip through
    ``zcat``). At the end of input, a last line without its newline is still decoded.
    """

    kind = "stdin"

    def __init__(self, stream: BinaryIO, name: str = "-", *, batch_lines: int = 64,
                 poll_interval: float = 0.25, clock: Clock = _utcnow,
                 max_examples: int = 5) -> None:
        super().__init__(name, batch_lines=batch_lines, clock=clock, max_examples=max_examples)
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be > 0 seconds, got {poll_interval!r}")
        self.stream = stream
        self.poll_interval = poll_interval

    def run(self, emit: Callable[[list[Any]], None], stop: threading.Event) -> None:
        lines = _LineSplitter(self.stats, self.name)
        read = self._reader_fn()
        self._set_state(True)
        ended = "stopped"
        try:
            while not stop.is_set():
                try:
                    data = read()
                except OSError as exc:
                    self.stats.record_error(self.name, lines.line_no, ErrorReason.UNREADABLE,
                                            f"cannot read further: {exc}")
                    ended = f"cannot read {self.name}: {exc.strerror or exc}"
                    break
                if data is None:  # nothing yet
                    continue
                if not data:
                    ended = "end of input"
                    break
                self._deliver(self._decode(*lines.feed(data)), emit)
            if ended == "end of input":  # no newline will come for a last partial line
                self._deliver(self._decode(*lines.finish()), emit)
        finally:
            self._set_state(False, ended)

    def _reader_fn(self) -> Callable[[], bytes | None]:
        """A read of what is available now: bytes, b"" at the end, None after a quiet poll."""
        try:
            fd = self.stream.fileno()
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
            read1 = getattr(self.stream, "read1", self.stream.read)
            return lambda: read1(_BLOCK_BYTES)
        timeout_ms = int(self.poll_interval * 1000)
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(fd, select.POLLIN | select.POLLPRI)

            def read_fd() -> bytes | None:
                if not poller.poll(timeout_ms):
                    return None
                return os.read(fd, _BLOCK_BYTES)
        else:  # pragma: no cover - platforms without poll()
            def read_fd() -> bytes | None:
                ready, _, _ = select.select([fd], [], [], self.poll_interval)
                return os.read(fd, _BLOCK_BYTES) if ready else None
        return read_fd


# -- the built-in generator ---------------------------------------------------------------------
class GeneratorSource(_Source):
    """The built-in traffic generator as a live source: a seeded cluster in (scaled) real time.

    Lines come from :class:`~netwarden.ingest.generator.realtime.RealtimeGenerator` (see it for
    pacing, the attack schedule and what continues from a history made by ``generate`` with the
    same seed) and are decoded through the same reader as files. ``labels`` lists the attacks
    injected so far, so a demo or a test can tell what it should detect.
    """

    kind = "generator"

    def __init__(self, *, seed: int = 0, start: datetime | None = None, rate: float = 1.0,
                 speed: float = 1.0, attacks: Sequence[str] | None = None,
                 first_attack_after: float = 60.0, attack_every: float = 600.0,
                 attack_duration: float | None = None, duration: float | None = None,
                 batch_lines: int = 64, clock: Clock = _utcnow,
                 monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], object] | None = None, max_examples: int = 5) -> None:
        super().__init__(f"generator:seed={seed}", batch_lines=batch_lines, clock=clock,
                         max_examples=max_examples)
        self.generator = RealtimeGenerator(
            seed=seed, rate=rate, start=start, speed=speed, attacks=attacks,
            first_attack_after=first_attack_after, attack_every=attack_every,
            attack_duration=attack_duration, duration=duration, clock=clock,
            monotonic=monotonic, sleep=sleep)

    @property
    def labels(self) -> tuple[AttackLabel, ...]:
        """Attacks injected so far (their start has been streamed), in order."""
        return self.generator.labels

    def run(self, emit: Callable[[list[Any]], None], stop: threading.Event) -> None:
        self._set_state(True)
        line_no = 1
        ended = "stopped"
        try:
            for lines in self.generator.batches(stop):
                raw = [line.encode() for line in lines]
                self._deliver(self._decode(line_no, raw), emit)
                line_no += len(raw)
            if not stop.is_set():
                ended = "end of the generated range"
        finally:
            self._set_state(False, ended)


# -- the factory --------------------------------------------------------------------------------
_SPECS = ("'generator', 'hubble' (the node's Hubble socket), 'hubble:ADDR' (a socket path or "
          "Relay's host:port), 'ebpf' (netwarden's own probes), '-' (stdin), 'file:PATH' or a "
          "PATH")


def open_source(spec: str, **options: Any) -> LiveSource:
    """The live source named by ``spec``, built with ``options`` (keyword arguments of its class).

    ``"generator"`` the built-in traffic generator; ``"hubble"`` Hubble's gRPC API on the node's
    socket, ``"hubble:ADDR"`` at a socket path or ``host:port`` (:class:`HubbleSource`);
    ``"-"`` standard input; ``"file:PATH"`` or a plain ``PATH`` a followed file. Anything else
    is a ValueError.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty source: use {_SPECS}")
    scheme, sep, rest = spec.partition(":")
    if spec == "generator":
        return _build(GeneratorSource, spec, options)
    if spec == "-":
        return _build(StreamSource, spec, {"stream": sys.stdin.buffer, "name": "-", **options})
    if sep and scheme == "file":
        if not rest:
            raise ValueError("source 'file:' needs a path: file:PATH")
        return _build(FollowFile, spec, {"path": rest, **options})
    if scheme == "hubble":
        from netwarden.ingest.hubble import HubbleSource

        if sep and not rest:
            raise ValueError("source 'hubble:' needs an address: hubble:HOST:PORT or "
                             "hubble:/path/to/hubble.sock (plain 'hubble' is the node's socket)")
        server = {"server": rest} if rest else {}
        return _build(HubbleSource, spec, {**options, **server})
    if spec == "ebpf":
        from netwarden.bpf.source import EbpfSource

        return _build(EbpfSource, spec, options)
    if sep and len(scheme) > 1 and scheme.replace("+", "").replace("-", "").isalnum() \
            and "/" not in scheme:
        raise ValueError(f"unknown source {spec!r}: use {_SPECS} (write file:PATH for a file "
                         "name with a colon)")
    return _build(FollowFile, spec, {"path": spec, **options})


def _build(cls: type[Any], spec: str, kwargs: dict[str, Any]) -> Any:
    params = inspect.signature(cls).parameters
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        valid = ", ".join(p for p in params if p not in ("stream", "path", "server"))
        raise ValueError(f"source {spec!r} ({cls.__name__}) has no option "
                         f"{', '.join(unknown)}; valid: {valid}")
    return cls(**kwargs)
