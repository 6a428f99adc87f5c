"""Hubble protobuf benchmark: the whole path from GetFlowsResponse bytes to closed windows, vs
protobuf parsing alone and vs the JSON path on the same flows.

Generated traffic (Hubble's schema, attacks included; ``--cluster`` picks the generator's
cluster) is turned once into serialized ``observer.GetFlowsResponse`` messages, as a Hubble
server sends them, and kept in ``benchmarks/.data`` beside the same flows as Hubble JSON lines.
Then, pinned to one core, each in its own child process, alternating ``--repeat`` times (best
time counts):

(a) ``parse``: ``GetFlowsResponse.FromString`` on every message (protobuf parsing alone, upb);
    ``convert``: the Hubble source's message handling alone (:meth:`HubbleSource._message`:
    parse, resume/dedupe bookkeeping, conversion to the pipeline's record);
(b) ``windows``: the same and the window builder, to closed feature windows;
(d) ``json``: the JSON path on the same flows, what ``netwarden windows`` runs in process
    (:func:`~netwarden.ingest.pipeline.build_windows`: reader and window builder);
    ``json_decode``: its reader alone;
(c) ``grpc``: as (b), but the messages come over real gRPC on loopback from a server process
    (grpcio, on the other core) to :class:`HubbleSource`, backpressure included; the client's
    CPU time is reported too, since a Python server may be slower than the client.

Printed: flows per second of each and the ratios to (a) and to (d). The target of issue 22 is
(b) >= (d). With ``--phases stream_sync,stream_sync1,stream_aio,stream_reader`` it measures
only reading the stream (no parsing), to find grpcio's floor: synchronous (default channel,
and single-threaded unary-stream as the source uses), ``grpc.aio``, and a reader process that
forwards the bytes over a pipe (this process's CPU per message is what the pipeline would pay).

    python benchmarks/hubble.py [--hours 4] [--rate 3] [--cluster demo] [--repeat 3] [--cpu 0]
                                [--phases parse,convert,windows,json_decode,json,grpc]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

DATA = Path(__file__).resolve().parent / ".data"
_LEN = struct.Struct("<I")


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def _messages(path: Path) -> list[bytes]:
    """The length-prefixed messages of ``path``, in memory (so reading the file is not timed)."""
    data = path.read_bytes()
    out, i = [], 0
    while i < len(data):
        (n,) = _LEN.unpack_from(data, i)
        out.append(data[i + 4 : i + 4 + n])
        i += 4 + n
    return out


def _ensure_data(hours: float, rate: float, seed: int, cluster: str) -> Path:
    """Generated flows as serialized GetFlowsResponse messages, beside the same flows as Hubble
    JSON lines (``flows.jsonl``, for the JSON path); made once, then reused."""
    from google.protobuf import json_format

    from netwarden.generator import SCENARIOS, generate
    from netwarden.hubble import observer_pb2

    out = DATA / f"hubble-{cluster}-h{hours:g}-r{rate:g}-s{seed}"
    target = out / "responses.bin"
    if target.exists() and (out / "done").exists():
        return target
    print(f"generating {hours:g} h of {cluster} at rate {rate:g} into {out} ...", flush=True)
    result = generate(
        out, hours=hours, seed=seed, attacks=list(SCENARIOS), rate=rate, cluster=cluster
    )
    print(f"converting {result.flows:,} JSON flows to protobuf (json_format, slow) ...", flush=True)
    n = 0
    with open(result.flows_path, "rb") as src, open(target, "wb") as dst:
        for line in src:
            message = json_format.Parse(
                line, observer_pb2.GetFlowsResponse(), ignore_unknown_fields=True
            )
            data = message.SerializeToString()
            dst.write(_LEN.pack(len(data)) + data)
            n += 1
            if n % 50_000 == 0:
                print(f"  {n:,}", flush=True)
    (out / "done").write_text(str(n))
    return target


def _now() -> tuple[float, float]:
    """Wall time and this process's CPU time, to time a phase both ways: on a shared machine
    the wall time also counts waiting for the core, CPU time does not."""
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> dict:
    wall, cpu = _now()
    return {"seconds": wall - start[0], "cpu_seconds": cpu - start[1]}


def _phase_parse(messages: list[bytes]) -> dict:
    from netwarden.hubble import observer_pb2

    parse = observer_pb2.GetFlowsResponse.FromString
    start = _now()
    for data in messages:
        parse(data)
    return {"flows": len(messages), **_since(start)}


def _builder() -> tuple[object, list[int]]:
    from netwarden.ingest.windows import WindowBuilder

    closed = [0]
    return WindowBuilder(), closed


def _phase_windows(messages: list[bytes]) -> dict:
    from netwarden.ingest.sources.hubble import HubbleSource

    builder, closed = _builder()
    source = HubbleSource("127.0.0.1:4245", log=lambda _: None)
    handle = source._message
    batch: list = []
    start = _now()
    for data in messages:
        flow = handle(data)
        if flow is not None:
            batch.append(flow)
            if len(batch) == 64:
                closed[0] += len(builder.add(batch))
                batch = []
    if batch:
        closed[0] += len(builder.add(batch))
    closed[0] += len(builder.flush())
    elapsed = _since(start)
    return {
        "flows": source.stats.flows,
        **elapsed,
        "windows": closed[0],
        "late": builder.stats.late_flows,
    }


def _serve(path: Path, cpu: int) -> None:
    """Child: a gRPC Observer server sending the messages of ``path`` once, then holding."""
    from concurrent import futures

    import grpc

    from netwarden.hubble import observer_pb2

    _pin(cpu)
    messages = _messages(path)

    def get_flows(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        yield from messages
        while context.is_active():
            time.sleep(0.05)

    def status(request: bytes, context: grpc.ServicerContext) -> bytes:
        return observer_pb2.ServerStatusResponse(version="benchmark").SerializeToString()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "observer.Observer",
                {
                    "GetFlows": grpc.unary_stream_rpc_method_handler(get_flows),
                    "ServerStatus": grpc.unary_unary_rpc_method_handler(status),
                },
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    server.stop(grace=None)


def _phase_grpc(path: Path, total: int, cpu: int) -> dict:
    from netwarden.ingest.sources.hubble import HubbleSource

    server, port = _start_server(path, cpu)
    try:
        builder, closed = _builder()
        stop = threading.Event()
        source = HubbleSource(f"127.0.0.1:{port}", log=lambda _: None)

        def emit(batch: list) -> None:
            closed[0] += len(builder.add(batch))

        cpu0 = _cpu_seconds()
        start = time.perf_counter()
        thread = threading.Thread(target=source.run, args=(emit, stop), daemon=True)
        thread.start()
        while source._flows < total and thread.is_alive():
            time.sleep(0.01)
        closed[0] += len(builder.flush())
        elapsed = time.perf_counter() - start
        busy = _cpu_seconds() - cpu0
        stop.set()
        thread.join(timeout=10)
        return {
            "flows": source._flows,
            "seconds": elapsed,
            "windows": closed[0],
            "cpu_seconds": busy,
        }
    finally:
        server.stdin.close()
        server.wait(timeout=30)


def _start_server(path: Path, cpu: int) -> tuple[subprocess.Popen, int]:
    """The benchmark's Observer server in its own process, on the other core."""
    server = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve",
            str(path),
            "--cpu",
            str(1 - cpu if os.cpu_count() and os.cpu_count() > 1 else cpu),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    return server, int(server.stdout.readline())


def _raw_flows(channel: object) -> Iterator[bytes]:
    """GetFlows (follow) on ``channel`` as raw response bytes: the stream without decoding."""
    from netwarden.hubble import observer_pb2

    return channel.unary_stream(  # type: ignore[attr-defined]
        "/observer.Observer/GetFlows",
        request_serializer=observer_pb2.GetFlowsRequest.SerializeToString,
        response_deserializer=None,
    )(observer_pb2.GetFlowsRequest(follow=True))


def _stream_sync(port: int, total: int, single_threaded: bool) -> int:
    import grpc
    import grpc.experimental

    options = [("grpc.max_receive_message_length", 16 << 20)]
    if single_threaded:
        options.append((grpc.experimental.ChannelOptions.SingleThreadedUnaryStream, 1))
    n = 0
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        call = _raw_flows(channel)
        for _ in call:
            n += 1
            if n == total:
                break
        call.cancel()
    return n


def _stream_aio(port: int, total: int) -> int:
    import asyncio

    import grpc

    from netwarden.hubble import observer_pb2

    async def read() -> int:
        n = 0
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_stream(
                "/observer.Observer/GetFlows",
                request_serializer=observer_pb2.GetFlowsRequest.SerializeToString,
                response_deserializer=None,
            )(observer_pb2.GetFlowsRequest(follow=True))
            while n < total:
                await call.read()
                n += 1
            call.cancel()
        return n

    return asyncio.run(read())


def _stream_reader_process(port: int, total: int) -> int:
    """A reader process (sync, single-threaded gRPC) forwards the messages' bytes over a pipe,
    length-prefixed, in blocks; this process only cuts them apart."""
    reader = subprocess.Popen(
        [sys.executable, __file__, "--forward", str(port), "--count", str(total)],
        stdout=subprocess.PIPE,
    )
    n = 0
    carry = b""
    read = reader.stdout.read1
    unpack = _LEN.unpack_from
    try:
        while n < total:
            block = read(1 << 20)
            if not block:
                break
            data = carry + block if carry else block
            i, end = 0, len(data)
            while i + 4 <= end:
                (size,) = unpack(data, i)
                if i + 4 + size > end:
                    break
                data[i + 4 : i + 4 + size]  # the message, as the pipeline would take it
                i += 4 + size
                n += 1
            carry = data[i:]
    finally:
        reader.wait(timeout=30)
    return n


def _forward(port: int, count: int) -> None:
    """Child of :func:`_stream_reader_process`: read the stream, write length-prefixed bytes."""
    import grpc
    import grpc.experimental

    out = sys.stdout.buffer
    options = [(grpc.experimental.ChannelOptions.SingleThreadedUnaryStream, 1)]
    pending: list[bytes] = []
    n = 0
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        call = _raw_flows(channel)
        pack = _LEN.pack
        for data in call:
            pending.append(pack(len(data)))
            pending.append(data)
            n += 1
            if len(pending) >= 128 or n == count:
                out.write(b"".join(pending))
                out.flush()
                pending = []
            if n == count:
                break
        call.cancel()


def _phase_stream(path: Path, total: int, cpu: int, mode: str) -> dict:
    """Only reading the stream (no parsing): the floor of each way grpcio offers."""
    server, port = _start_server(path, cpu)
    try:
        cpu0 = _cpu_seconds()
        start = time.perf_counter()
        if mode == "stream_sync":
            n = _stream_sync(port, total, single_threaded=False)
        elif mode == "stream_sync1":
            n = _stream_sync(port, total, single_threaded=True)
        elif mode == "stream_aio":
            n = _stream_aio(port, total)
        else:
            n = _stream_reader_process(port, total)
        elapsed = time.perf_counter() - start
        return {"flows": n, "seconds": elapsed, "cpu_seconds": _cpu_seconds() - cpu0}
    finally:
        server.stdin.close()
        server.wait(timeout=30)


def _cpu_seconds() -> float:
    """CPU time of this process, all threads (gRPC's included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _phase_convert(messages: list[bytes]) -> dict:
    """The source's message handling alone: bytes to the pipeline's records, no windows."""
    from netwarden.ingest.sources.hubble import HubbleSource

    source = HubbleSource("127.0.0.1:4245", log=lambda _: None)
    handle = source._message
    start = _now()
    for data in messages:
        handle(data)
    return {"flows": source.stats.flows, **_since(start)}


def _phase_json(path: Path, decode_only: bool) -> dict:
    """The JSON path on the same flows: ``netwarden windows``' reader and window builder
    (:func:`~netwarden.ingest.pipeline.build_windows`), or the reader alone."""
    from netwarden.ingest.compact import CompactFlow
    from netwarden.ingest.pipeline import build_windows
    from netwarden.ingest.reader import FlowReader

    jsonl = path.parent / "flows.jsonl"
    if decode_only:
        reader = FlowReader(flow_type=CompactFlow)
        start = _now()
        for _ in reader.read(jsonl):
            pass
        return {"flows": reader.stats.flows, **_since(start)}
    closed = [0]

    def sink(ws: list) -> None:
        closed[0] += len(ws)

    start = _now()
    result = build_windows([jsonl], sink)
    return {
        "flows": result.read.flows,
        **_since(start),
        "windows": closed[0],
        "late": result.build.late_flows,
    }


PHASES = ("parse", "convert", "windows", "json_decode", "json", "grpc")
STREAM_PHASES = ("stream_sync", "stream_sync1", "stream_aio", "stream_reader")


def _child(phase: str, path: Path, cpu: int) -> dict:
    _pin(cpu)
    if phase in ("json", "json_decode"):
        return _phase_json(path, decode_only=phase == "json_decode")
    messages = _messages(path)
    if phase == "parse":
        return _phase_parse(messages)
    if phase == "convert":
        return _phase_convert(messages)
    if phase == "windows":
        return _phase_windows(messages)
    total = len(messages)
    del messages
    if phase in STREAM_PHASES:
        return _phase_stream(path, total, cpu, phase)
    return _phase_grpc(path, total, cpu)


def _run_child(phase: str, path: Path, cpu: int) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", phase, "--file", str(path), "--cpu", str(cpu)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child {phase} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=4.0, help="hours of generated traffic")
    parser.add_argument("--rate", type=float, default=3.0, help="traffic multiplier")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--cluster", default="demo", help="generator cluster shape (demo, fintech, media)"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="alternating runs of each; the best counts"
    )
    parser.add_argument("--cpu", type=int, default=0, help="core to pin the measurements to")
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"comma-separated subset of {','.join(PHASES)} (default: all), or of the "
        f"gRPC stream reading floors, no parsing: {','.join(STREAM_PHASES)}",
    )
    parser.add_argument("--child", choices=PHASES + STREAM_PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--forward", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve, args.cpu)
        return
    if args.forward:
        _forward(args.forward, args.count)
        return
    if args.child:
        print(json.dumps(_child(args.child, args.file, args.cpu)))
        return
    phases = [p for p in args.phases.split(",") if p]
    unknown = sorted(set(phases) - set(PHASES + STREAM_PHASES))
    if unknown:
        parser.error(
            f"unknown phase {', '.join(unknown)}; valid: {', '.join(PHASES + STREAM_PHASES)}"
        )

    path = _ensure_data(args.hours, args.rate, args.seed, args.cluster)
    best: dict[str, dict] = {}
    least_cpu: dict[str, float] = {}  # the least CPU time of each phase over the runs
    for i in range(args.repeat):
        for phase in phases:
            r = _run_child(phase, path, args.cpu)
            print(
                f"  run {i + 1} {phase:13s} {r['flows'] / r['seconds']:>10,.0f} flows/s, "
                f"{r['flows'] / r['cpu_seconds']:>10,.0f} per CPU-second",
                flush=True,
            )
            if phase not in best or r["seconds"] < best[phase]["seconds"]:
                best[phase] = r
            least_cpu[phase] = min(least_cpu.get(phase, r["cpu_seconds"]), r["cpu_seconds"])
    rate = {k: v["flows"] / v["seconds"] for k, v in best.items()}
    cpu_rate = {k: best[k]["flows"] / v for k, v in least_cpu.items()}
    size = path.stat().st_size
    count = len(_messages(path))
    print()
    print(
        f"input: {args.cluster}, {count:,} GetFlowsResponse messages ({size / 1e6:,.0f} MB, "
        f"{size / max(count, 1):,.0f} bytes each; the same flows as JSON lines: "
        f"{(path.parent / 'flows.jsonl').stat().st_size / max(count, 1):,.0f} bytes each), "
        f"one core (cpu {args.cpu}), best of {args.repeat}; flows per second of wall time, "
        "then per second of the process's CPU time (what it costs when it waits for a shared "
        "core), each with its ratios to (a) and (d)"
    )

    def line(key: str, label: str) -> None:
        if key not in rate:
            return
        text = f"{label:<52s}:"
        for rates in (rate, cpu_rate):
            text += f" {rates[key]:>10,.0f}" + "".join(
                f" /{base} {rates[key] / rates[base]:.2f}"
                for base in ("parse", "json")
                if base in rates and base != key
            )
        print(text)

    line("parse", "(a) parse only, GetFlowsResponse.FromString")
    line("convert", "    bytes -> records (HubbleSource._message)")
    line("windows", "(b) bytes -> closed windows (netwarden)")
    line("json_decode", "    JSON lines -> records (FlowReader)")
    line("json", "(d) JSON lines -> closed windows (build_windows)")
    line("grpc", "(c) gRPC on loopback -> closed windows (netwarden)")
    for key, label in (
        ("stream_sync", "gRPC stream only, sync (grpcio default)"),
        ("stream_sync1", "gRPC stream only, sync, single-threaded"),
        ("stream_aio", "gRPC stream only, grpc.aio"),
        ("stream_reader", "gRPC stream only, reader process + pipe"),
    ):
        if key in best:
            r = best[key]
            print(
                f"{label:<52s}: {rate[key]:>10,.0f} messages/s, this process "
                f"{r['cpu_seconds'] / r['flows'] * 1e6:,.1f} CPU-us a message "
                f"({r['cpu_seconds'] / r['seconds']:.0%} busy)"
            )
    if "grpc" in best:
        c = best["grpc"]
        busy = c["cpu_seconds"] / c["seconds"]
        print(
            f"    client CPU busy {busy:.0%} of one core during (c): "
            f"{c['flows'] / c['cpu_seconds']:,.0f} flows per client CPU second"
            + (
                "; below 100 %, the Python test server on the other core is the limit"
                if busy < 0.9
                else ""
            )
        )
    if "windows" in best or "json" in best or "grpc" in best:
        print(
            "windows closed: "
            + ", ".join(
                f"{k} {best[k]['windows']:,}" for k in ("windows", "json", "grpc") if k in best
            )
            + "; late flows: "
            + ", ".join(f"{k} {best[k]['late']:,}" for k in ("windows", "json") if k in best)
        )


if __name__ == "__main__":
    main()
