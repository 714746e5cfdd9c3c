#!/usr/bin/env python3
"""Helpers shared by the `make bench` scripts: reading what the tools wrote (JSON lines,
bpftool's program lists, iperf3's report) and formatting figures for the report.

Also a small command line for the shell scripts, so none of them embeds Python:

  bench_util.py meta                       facts about this run as JSON (from BENCH_* variables)
  bench_util.py last-pps FILE              "pps" of the last JSON line of FILE that has one
  bench_util.py iperf-gbps FILE            received Gbit/s of an iperf3 --json report
  bench_util.py prog-ids < bpftool.json    the ids of `bpftool -j prog show`, space-separated
  bench_util.py prog-run < bpftool.json    run_time_ns and run_cnt of the first program listed
  bench_util.py ns-per-packet P0 P1 SINK BEFORE
                                           BPF ns per received packet of the programs that are
                                           in P1 and not in BEFORE (ids), P0 -> P1
"""
import json
import os
import statistics
import sys


def last_json(path):
    """The last JSON object line of a file; {} when there is none or it cannot be read."""
    try:
        lines = [line for line in open(path) if line.strip().startswith("{")]
        return json.loads(lines[-1]) if lines else {}
    except (OSError, ValueError):
        return {}


def prog_stats(prefix):
    """name -> (run_time_ns, run_cnt) during the flood, for the tool's own programs."""
    try:
        s0, s1 = (json.load(open(prefix + s)) for s in (".s0", ".s1"))
    except (OSError, ValueError):
        return {}
    ids = set(s0["ids"]) | set(s1["ids"])
    before = {p["id"]: p for p in s0["progs"] if p["id"] in ids}
    res = {}
    for p in s1["progs"]:
        if p["id"] not in ids or p["id"] not in before:
            continue
        b = before[p["id"]]
        dt = p.get("run_time_ns", 0) - b.get("run_time_ns", 0)
        dc = p.get("run_cnt", 0) - b.get("run_cnt", 0)
        t, c = res.get(p["name"], (0, 0))
        res[p["name"]] = (t + dt, c + dc)
    return res


def iperf_gbps(path):
    """Received Gbit/s of an iperf3 --json report; None when it cannot be read."""
    try:
        v = json.load(open(path))
        return v["end"]["sum_received"]["bits_per_second"] / 1e9
    except (OSError, ValueError, KeyError):
        return None


def nsrun(t_c):
    t, c = t_c
    return t / c if c else None


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def f(x, fmt="{:.0f}"):
    return "n/a" if x is None else fmt.format(x)


def ratio(a, b):
    return a / b if a is not None and b else None


def verdict(ok):
    return "n/a" if ok is None else ("met" if ok else "**MISSED**")


def meta():
    """The run's facts for the report header. bench.sh sets BENCH_* for the strings and the
    knobs (numbers stay numbers in the JSON)."""
    env = os.environ
    numbers = ("rounds", "flood_s", "stats_s", "sink_s", "port", "frontend_events", "iperf_s",
               "sse_n", "nf_rate", "nf_s")
    strings = ("date", "kernel", "commit", "cpu", "bpftool", "bpftrace", "nf_rules", "nf_backends",
               "nf_plot")
    m = {k: env.get("BENCH_" + k.upper(), "") for k in strings}
    for k in numbers:
        v = float(env["BENCH_" + k.upper()])
        m[k] = int(v) if v.is_integer() else v
    return m


def ns_per_packet(p0_path, p1_path, sink_path, before):
    p0 = {p["id"]: p for p in json.load(open(p0_path))}
    old = set(int(i) for i in before.split())
    pkts = [json.loads(line) for line in open(sink_path) if "received" in line][-1]["received"]
    ns = 0
    for p in json.load(open(p1_path)):
        if p["id"] in old:
            continue
        ns += p.get("run_time_ns", 0) - p0.get(p["id"], {}).get("run_time_ns", 0)
    return ns / max(pkts, 1)


def main(argv):
    cmd, args = (argv[1], argv[2:]) if len(argv) > 1 else ("", [])
    if cmd == "meta" and not args:
        print(json.dumps(meta()))
    elif cmd == "last-pps" and len(args) == 1:
        print([json.loads(line) for line in open(args[0]) if "pps" in line][-1]["pps"])
    elif cmd == "iperf-gbps" and len(args) == 1:
        g = iperf_gbps(args[0])
        if g is None:
            sys.exit(f"bench_util: no iperf3 result in {args[0]}")
        print(g)
    elif cmd == "prog-ids" and not args:
        print(" ".join(str(p["id"]) for p in json.load(sys.stdin)))
    elif cmd == "prog-run" and not args:
        p = json.load(sys.stdin)
        p = p[0] if isinstance(p, list) else p
        print(p.get("run_time_ns", 0), p.get("run_cnt", 0))
    elif cmd == "ns-per-packet" and len(args) == 4:
        print(f"{ns_per_packet(*args):.0f}")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
