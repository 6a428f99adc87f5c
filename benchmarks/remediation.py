"""Remediation benchmark: netwarden's proposed policies vs hubble-audit2policy, replayed.

Both tools get the same training flows (normal traffic, no attacks) and propose one
CiliumNetworkPolicy per workload. Both sets are replayed with netwarden's Cilium-semantics
matcher (remediation.matcher) on a later test day with every attack scenario. Printed for each
tool, in the same run: the share of benign connections (flows that are not replies) the policies
would block, the share of attack connections blocked per scenario, the number of rules, and the
number of distinct (workload, direction, peer, port) pairs seen in training: the rule count one
rule per observed peer and port would need.

Attack flows are told from benign ones exactly: the generator keeps a day's normal traffic
identical with and without attacks, so the attack flows are those the attacked day has and its
clean twin does not. DNS tunnelling rides on allowed DNS (port 53 to kube-dns); a network policy
stops it only through its L7 DNS rules, which the L3/L4 matcher does not judge, so it is
reported separately as the share of tunnel lookups outside each policy's DNS names.

    python benchmarks/remediation.py [--train-hours 24] [--test-hours 6]

Needs hubble-audit2policy (PyPI): `pip install -e ".[bench]"` (`make bench-remediation` does it).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from netwarden.generator import SCENARIOS, AttackLabel, generate
from netwarden.generator.groundtruth import split_attack_flows
from netwarden.ingest.identity import IdentityResolver
from netwarden.ingest.reader import read_flows
from netwarden.remediation.matcher import Decision, PolicySet, fqdn_pattern
from netwarden.remediation.propose import Proposer
from netwarden.remediation.schema import load_policies, validate_policy

DATA = Path(__file__).resolve().parent / ".data" / "remediation"
START = datetime(2026, 1, 5, tzinfo=UTC)


def _rules(policy: dict[str, Any]) -> int:
    specs = policy.get("specs") or [policy.get("spec") or {}]
    return sum(
        len(spec.get(k) or [])
        for spec in specs
        for k in ("ingress", "egress", "ingressDeny", "egressDeny")
    )


def _observed_pairs(path: Path) -> int:
    """Distinct (subject, direction, peer, port/protocol) of forwarded non-reply flows."""
    resolver = IdentityResolver()
    pairs = set()
    for f in read_flows([path]):
        if f.is_reply or f.verdict not in ("FORWARDED", 1) or f.IP is None:
            continue
        src, _ = resolver.resolve(f.source, f.IP.source)
        dst, _ = resolver.resolve(f.destination, f.IP.destination)
        p = (f.l4.TCP or f.l4.UDP) if f.l4 else None
        port = (p.destination_port if p else 0, "TCP" if f.l4 and f.l4.TCP else "other")
        if src is not None:
            pairs.add((src.id, "egress", dst.id if dst else f.IP.destination, port))
        if dst is not None:
            pairs.add((dst.id, "ingress", src.id if src else f.IP.source, port))
    return len(pairs)


def _dns_patterns(policy: dict[str, Any] | None) -> list[Any]:
    out = []
    for spec in [policy.get("spec") or {}] if policy else []:
        for rule in spec.get("egress") or []:
            for ports in rule.get("toPorts") or []:
                for entry in (ports.get("rules") or {}).get("dns") or []:
                    out.append(fqdn_pattern(entry.get("matchName") or entry["matchPattern"]))
    return out


def _evaluate(
    policies: list[dict[str, Any]], attacked: Path, clean: Path, labels: tuple[AttackLabel, ...]
) -> dict[str, Any]:
    policy_set = PolicySet(policies)
    by_identity = {_subject(p): p for p in policies}
    resolver = IdentityResolver()
    conns: dict[str, set] = defaultdict(set)
    blocked: dict[str, set] = defaultdict(set)
    tunnel = [0, 0]
    benign = [0, 0]
    for f, attack in split_attack_flows(attacked, clean):
        verdict = policy_set.verdict(f)
        if not attack:
            if verdict.decision is not Decision.NOT_JUDGED:
                benign[0] += 1
                benign[1] += verdict.dropped
            continue
        if verdict.decision is Decision.NOT_JUDGED:
            continue
        src, _ = resolver.resolve(f.source, f.IP.source)
        dst, _ = resolver.resolve(f.destination, f.IP.destination)
        ids = (src.id if src else None, dst.id if dst else None)
        label = next(
            (
                lb
                for lb in labels
                if lb.identity in ids
                and lb.start - timedelta(seconds=5) <= f.time <= lb.end + timedelta(minutes=1)
            ),
            None,
        )
        if label is None:
            continue
        p = (f.l4.TCP or f.l4.UDP) if f.l4 else None
        if p is not None and p.destination_port == 53 and dst and dst.namespace == "kube-system":
            if f.l7 is not None and f.l7.dns is not None and label.scenario == "dns_tunnel":
                # refused at L3/L4, or by the policy's DNS rules (no DNS rules: any name goes)
                query = f.l7.dns.query.rstrip(".") + "."
                pats = _dns_patterns(by_identity.get(label.identity))
                tunnel[0] += 1
                tunnel[1] += verdict.dropped or (
                    bool(pats) and not any(x.fullmatch(query) for x in pats)
                )
            continue
        conn = (
            f.IP.source,
            f.IP.destination,
            p.source_port if p else 0,
            p.destination_port if p else 0,
        )
        conns[label.scenario].add(conn)
        if verdict.dropped:
            blocked[label.scenario].add(conn)
    return {
        "benign": benign,
        "conns": conns,
        "blocked": blocked,
        "tunnel": tunnel,
        "rules": sum(_rules(p) for p in policies),
        "policies": len(policies),
    }


_APP_KEYS = (
    "k8s:app",
    "app",
    "k8s:app.kubernetes.io/name",
    "app.kubernetes.io/name",
    "k8s:k8s-app",
    "k8s-app",
)


def _subject(policy: dict[str, Any]) -> str:
    """``namespace/workload`` of the endpoints a policy selects (by its app label)."""
    labels = ((policy.get("spec") or {}).get("endpointSelector") or {}).get("matchLabels") or {}
    app = next((labels[k] for k in _APP_KEYS if k in labels), "")
    return f"{policy['metadata'].get('namespace', 'default')}/{app}"


def _audit2policy(train: Path, out: Path) -> list[dict[str, Any]]:
    exe = shutil.which("hubble-audit2policy") or str(
        Path(sys.executable).parent / "hubble-audit2policy"
    )
    if not Path(exe).exists():
        raise SystemExit("hubble-audit2policy is not installed: pip install -e '.[bench]'")
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [exe, str(train), "-o", str(out), "--verdict", "FORWARDED"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"hubble-audit2policy failed:\n{proc.stderr[-2000:]}")
    return load_policies(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-hours", type=float, default=24.0)
    parser.add_argument("--test-hours", type=float, default=6.0)
    parser.add_argument("--seed", type=int, default=21)
    args = parser.parse_args()
    root = DATA / f"s{args.seed}-{args.train_hours:g}h-{args.test_hours:g}h"
    train = root / "train" / "flows.jsonl"
    if not train.exists():
        generate(train.parent, hours=args.train_hours, seed=args.seed, start=START)
    test_start = START + timedelta(days=1, hours=8)
    attacked = generate(
        root / "attacked",
        hours=args.test_hours,
        seed=args.seed + 1,
        start=test_start,
        attacks=list(SCENARIOS),
    )
    clean = generate(root / "clean", hours=args.test_hours, seed=args.seed + 1, start=test_start)
    t = time.perf_counter()
    ours = list(Proposer().add_all(read_flows([train])).policies().values())
    ours_s = time.perf_counter() - t
    with tempfile.TemporaryDirectory(prefix="netwarden-a2p-") as tmp:
        t = time.perf_counter()
        theirs = _audit2policy(train, Path(tmp))
        theirs_s = time.perf_counter() - t
    invalid_theirs = sum(bool(validate_policy(p)) for p in theirs)
    pairs = _observed_pairs(train)
    results = {
        "netwarden": _evaluate(ours, attacked.flows_path, clean.flows_path, attacked.labels),
        "hubble-audit2policy": _evaluate(
            theirs, attacked.flows_path, clean.flows_path, attacked.labels
        ),
    }
    print(
        f"training: {args.train_hours:g} h (seed {args.seed}); test: {args.test_hours:g} h "
        f"with every attack; {pairs:,} distinct (workload, direction, peer, port) pairs seen "
        "in training"
    )
    print(
        f"netwarden proposed in {ours_s:.1f} s; hubble-audit2policy in {theirs_s:.1f} s "
        f"({invalid_theirs} of its {len(theirs)} policies fail the CRD schema)"
    )
    print()
    print(f"{'':28s} {'netwarden':>22s} {'hubble-audit2policy':>22s}")
    for name, fmt in (("policies", "policies"), ("rules", "rules")):
        print(f"{name:28s} " + " ".join(f"{results[t][fmt]:>22,}" for t in results))
    row = []
    for tool in results:
        total, dropped = results[tool]["benign"]
        row.append(f"{dropped:,}/{total:,} = {dropped / max(total, 1):.2%}")
    print(f"{'benign flows blocked':28s} " + " ".join(f"{x:>22s}" for x in row))
    for scenario in SCENARIOS:
        row = []
        for tool in results:
            if scenario == "dns_tunnel":
                total, refused = results[tool]["tunnel"]
                row.append(f"{refused}/{total} = {refused / max(total, 1):.0%} (DNS)")
            else:
                c = len(results[tool]["conns"][scenario])
                b = len(results[tool]["blocked"][scenario])
                row.append(f"{b}/{c} = {b / max(c, 1):.0%}")
        print(f"{scenario + ' blocked':28s} " + " ".join(f"{x:>22s}" for x in row))


if __name__ == "__main__":
    main()
