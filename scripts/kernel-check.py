#!/usr/bin/env python3
"""Check `netstack-lat selftest --json` outputs against tests/data/kernels.json, and print
the kernels x hook families table of docs/selftest.md.

usage: kernel-check.py [--table] SELFTEST.json...
Exit 1 if a selftest failed or a kernel series in kernels.json got other hooks than its BTF
says it offers.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
EXPECT = os.path.join(HERE, "..", "tests", "data", "kernels.json")
FAMILIES = ["tracepoint", "raw_tp", "fentry", "kprobe"]
POINTS = ["rx_ip", "rx_transport", "rx_sockq", "rx_read", "tx_send", "tx_transport", "tx_nf_done"]


def series(release):
    return ".".join(release.split(".")[:2])


def family_result(v, fam):
    """'pass', 'FAIL' or 'skip', and a short note, for one family's checks."""
    cs = [c for c in v["checks"] if c.get("family") == fam]
    if not cs:
        return "not run", ""
    if all(c["ok"] is None for c in cs):
        return "skip", cs[0]["detail"]
    if any(c["ok"] is False for c in cs):
        bad = [c for c in cs if c["ok"] is False]
        return "FAIL", "; ".join(f'{c["check"]} {c.get("proto") or ""}: {c["detail"]}' for c in bad)
    ms = []
    for c in cs:
        d = c.get("data") or {}
        if c["check"] == "delayed_reader" and "p50_ns" in d:
            ms.append(f'{c["proto"]} {d["p50_ns"] / 1e6:.1f}')
        if c["check"] == "held_writes" and "p50_ns" in d:
            ms.append(f'held {d["p50_ns"] / 1e6:.1f}')
    return "pass", " / ".join(ms) + " ms" if ms else ""


def check(v, expect):
    errs = []
    if not v.get("ok"):
        errs.append("selftest failed")
    mk = [c for c in v["checks"] if c["check"] == "marker_capture"]
    if not mk or mk[0]["ok"] is not True:
        errs.append("marker_capture did not pass: " + (mk[0]["detail"] if mk else "not run"))
    e = expect.get(series(v["kernel"]))
    if e is None:
        return errs
    for k in ("netfilter_link", "rdonly_cast"):
        if v[k] != e[k]:
            errs.append(f"{k} is {v[k]}, the kernel's BTF says {e[k]}")
    got = {p["point"]: p["hook"] for p in v["points"]}
    for point, hook in e["points"].items():
        if got.get(point) != hook:
            errs.append(f"{point} served by {got.get(point)}, expected {hook}")
    for fam in e["families_run"]:
        r, note = family_result(v, fam)
        runs = [c for c in v["checks"] if c.get("family") == fam and c["check"] == "delayed_reader"]
        if r != "pass" or {c.get("proto") for c in runs} != {"udp", "tcp"}:
            errs.append(f"{fam}: expected to run and pass, got {r} {note}")
    for fam in e["families_skipped"]:
        r, _ = family_result(v, fam)
        if r != "skip":
            errs.append(f"{fam}: expected a skip (the kernel lacks its hooks), got {r}")
    return errs


def table(vs):
    print("| kernel | " + " | ".join(POINTS) + " | " + " | ".join(FAMILIES) + " | softirq | netfilter | marker |")
    print("|---" * (1 + len(POINTS) + len(FAMILIES) + 3) + "|")
    for v in vs:
        hooks = {p["point"]: p["hook"] or "none" for p in v["points"]}
        fams = []
        for f in FAMILIES:
            r, note = family_result(v, f)
            fams.append(f"{r} ({note})" if r == "pass" and note else r)
        other = {c["check"]: c for c in v["checks"] if c.get("family") is None}
        def verdict(name):
            c = other.get(name)
            return "—" if c is None else {True: "pass", False: "FAIL", None: "skip"}[c["ok"]]
        nf = verdict("netfilter_hooks")
        if nf == "pass" and not v["netfilter_link"]:
            nf = "refused (no link before 6.4)"
        mk = verdict("marker_capture")
        attach = ((other.get("marker_capture") or {}).get("data") or {}).get("attach")
        if mk == "pass" and attach:
            mk = f"pass ({attach})"
        print(f'| {v["kernel"]} | ' + " | ".join(hooks.get(p, "?") for p in POINTS) + " | "
              + " | ".join(fams) + f' | {verdict("softirq_net_rx")} | {nf} | {mk} |')


def main(argv):
    show = "--table" in argv
    files = [a for a in argv if a != "--table"]
    expect = json.load(open(EXPECT))
    vs, failed = [], False
    for f in files:
        try:
            v = json.load(open(f))
        except (OSError, ValueError) as e:
            print(f"kernel-check: {f}: {e}", file=sys.stderr)
            failed = True
            continue
        vs.append(v)
        for err in check(v, expect):
            print(f'kernel-check: {v["kernel"]}: {err}', file=sys.stderr)
            failed = True
    if show and vs:
        table(sorted(vs, key=lambda v: [int(x) for x in series(v["kernel"]).split(".")]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
