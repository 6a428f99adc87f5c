"""The `propose` and `simulate` commands: flows in, baseline policies or a replay report out.

``propose`` writes one CiliumNetworkPolicy YAML file per workload, named
``<namespace>-<workload>.yaml``; ``simulate`` replays flows through a folder of policies and
prints what they would drop. Other tools script against both: keep names and output as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from netwarden.commands.common import check_flow_paths, no_flows_error, progress_bar
from netwarden.errors import UserError
from netwarden.ingest.pipeline import input_size
from netwarden.ingest.reader import FlowReader

__all__ = ["propose", "simulate_policies"]


def _flows_with_progress(
    flows: Sequence[str], console: Console, label: str, reader: FlowReader[Any]
) -> Callable[[], Iterator[Any]]:
    """A generator factory of the flows of every file, advancing a progress bar by bytes read."""

    def run() -> Iterator[Any]:
        total = input_size(flows)
        with progress_bar(console) as progress:
            task = progress.add_task(label, total=total)
            done = 0
            for path in flows:
                last = [0]

                def on_position(position: int, _last: list[int] = last) -> None:
                    _last[0] = position
                    progress.update(task, completed=done + position)  # noqa: B023 (the running total)

                for batch in reader.read(path, on_position=on_position):
                    yield from batch
                done += last[0]

    return run


def _read_summary(reader: FlowReader[Any], console: Console) -> None:
    for line in reader.stats.summary_lines():
        console.print(line, markup=False)


def propose(
    flows: Sequence[str], out: Path, *, max_cidrs: int, console: Console
) -> dict[str, dict]:
    """Learn a baseline policy per workload from ``flows`` and write them into ``out``.

    Input without one valid flow, or flows that make no policy, is a UserError (exit 2): an
    empty folder must not pass for "nothing to allow"."""
    from netwarden.remediation.propose import Proposer, policy_file_name, policy_yaml
    from netwarden.remediation.schema import InvalidPolicy

    check_flow_paths(flows)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot create folder: {exc.strerror or exc}") from None
    if not out.is_dir():
        raise UserError(f"--out {out}: not a folder")
    reader: FlowReader[Any] = FlowReader()
    proposer = Proposer(max_cidrs=max_cidrs)
    proposer.add_all(_flows_with_progress(flows, console, "learning policies", reader)())
    _read_summary(reader, console)
    error = no_flows_error(flows, reader.stats)
    if error is not None:
        raise error
    try:
        policies = proposer.policies()
    except InvalidPolicy as exc:  # a bug, never a file: say so instead of writing it
        raise UserError(f"internal error, no policy written: {exc}") from None
    written = []
    for identity, policy in policies.items():
        path = out / policy_file_name(policy)
        try:
            path.write_text(policy_yaml(policy), encoding="utf-8")
        except OSError as exc:
            raise UserError(
                f"--out {out}: cannot write {path.name}: {exc.strerror or exc}"
            ) from None
        spec = policy["spec"]
        rules = sum(1 for r in spec.get("ingress", []) if r) + sum(
            1 for r in spec.get("egress", []) if r
        )
        written.append((identity, rules, path.name))
    console.print(
        f"{proposer.flows_used:,} of {proposer.flows_seen:,} flows were forwarded "
        f"requests of a workload; {len(written)} workloads",
        markup=False,
    )
    for identity, rules, name in written:
        console.print(f"  {identity}: {rules} rule{'s' * (rules != 1)} -> {name}", markup=False)
    for skipped in proposer.skipped:
        console.print(f"  {skipped.identity}: no policy ({skipped.reason})", markup=False)
    if not written:
        raise UserError(
            f"no policy written to {out}: {proposer.flows_used:,} of {proposer.flows_seen:,} "
            "valid flows were forwarded requests of a workload"
        )
    console.print(f"wrote {len(written)} policy files to {out}", markup=False)
    _show_simulation(policies, flows, console)
    return policies


def _show_simulation(policies: dict[str, dict], flows: Sequence[str], console: Console) -> None:
    """Every proposal is shown with its simulation: the learned flows replayed through the
    proposals (a second pass over the input), so a person sees what they would break."""
    from netwarden.remediation.simulate import simulate

    if not policies or any(str(path) == "-" for path in flows):
        return  # stdin cannot be read twice
    reader: FlowReader[Any] = FlowReader()
    report = simulate(
        list(policies.values()),
        _flows_with_progress(flows, console, "simulating the proposals", reader)(),
    )
    share = report.dropped / report.flows_judged if report.flows_judged else 0.0
    console.print(
        f"simulation on the same flows: {report.dropped:,} of {report.flows_judged:,} "
        f"judged flows would be dropped ({share:.2%})",
        markup=False,
    )
    for line in report.text(max_groups=5).splitlines()[3:]:
        if line.strip():
            console.print(line, markup=False)


def simulate_policies(
    policy_dir: Path, flows: Sequence[str], *, console: Console, out: Console
) -> None:
    """Replay ``flows`` through the valid policies of ``policy_dir``; print what they would drop."""
    from netwarden.remediation.matcher import PolicyError, PolicySet
    from netwarden.remediation.schema import PolicyFileError, load_policies, validate_policy
    from netwarden.remediation.simulate import simulate

    if not policy_dir.exists():
        raise UserError(f"--policies {policy_dir}: no such file or folder")
    check_flow_paths(flows)
    try:
        docs = load_policies(policy_dir)
    except (PolicyFileError, OSError) as exc:
        raise UserError(f"--policies {policy_dir}: {exc}") from None
    if not docs:
        raise UserError(f"--policies {policy_dir}: no policies found (*.yaml, *.yml)")
    invalid = []
    for doc in docs:
        problems = validate_policy(doc)
        if problems:
            meta = doc.get("metadata") if isinstance(doc, dict) else None
            name = (meta or {}).get("name", "<unnamed>") if isinstance(meta, dict) else "<unnamed>"
            invalid.append(f"{name}: " + "; ".join(str(p) for p in problems))
    if invalid:
        raise UserError(
            f"--policies {policy_dir}: {len(invalid)} invalid "
            f"polic{'y' if len(invalid) == 1 else 'ies'} refused: " + " | ".join(invalid)
        )
    try:
        policy_set = PolicySet(docs)
    except PolicyError as exc:
        raise UserError(f"--policies {policy_dir}: {exc}") from None
    reader: FlowReader[Any] = FlowReader()
    report = simulate(policy_set, _flows_with_progress(flows, console, "replaying flows", reader)())
    _read_summary(reader, console)
    console.print(f"{len(docs)} policies loaded from {policy_dir}", markup=False)
    out.print(report.text(), markup=False, highlight=False)
