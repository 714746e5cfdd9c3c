#!/usr/bin/env python3
"""The soak run's sampler and judge (scripts/soak.sh); standard library only.

sample: every EVERY seconds for SECONDS, one CSV row per tool process: RSS, open fds, CPU,
        entries of the process's own BPF hash maps (found through its fds, counted with
        the bpf syscall, so no other program's maps), lines of its /metrics and its loss
        counters; maps.csv holds the entries per map; the veth's packet rate goes along.
judge:  after warm-up (the first half), RSS, fds and map entries may grow at most 10%;
        the sink's datagrams and connections must all be in the tool's counts or in its
        loss counters (lost events, evicted chains, full tables). Writes summary.md and
        soak.svg, exits 1 on a failure.
"""

import argparse
import csv
import ctypes
import json
import os
import re
import subprocess
import sys
import time
import urllib.request

GROWTH_LIMIT = 0.10
# Absolute slack below which a change is noise, not growth (a map holding 3 in-flight
# entries instead of 1 has not grown by 200% in any sense that matters).
SLACK = {"rss_kb": 2048, "fds": 2, "fixed_fds": 2, "map_entries": 64, "metrics_lines": 20}

# --- BPF map entries, through the bpf syscall -------------------------------------------------

SYS_BPF = 321  # x86_64
BPF_MAP_GET_NEXT_KEY = 4
BPF_MAP_GET_FD_BY_ID = 14
BPF_OBJ_GET_INFO_BY_FD = 15
# Map types whose entry count varies (hash, percpu hash, LRU, LRU percpu); arrays are full
# by construction and ring buffers have no entries.
HASH_TYPES = {1, 5, 9, 10}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _bpf(cmd, attr):
    r = _libc.syscall(SYS_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    return r, ctypes.get_errno()


class MapInfo(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16),
        ("pad", ctypes.c_uint8 * 128),
    ]


def map_fd(map_id):
    attr = (ctypes.c_uint32 * 32)()
    attr[0] = map_id
    fd, _ = _bpf(BPF_MAP_GET_FD_BY_ID, attr)
    return fd if fd >= 0 else None


def map_info(fd):
    info = MapInfo()
    attr = (ctypes.c_uint64 * 16)()
    attr[0] = fd | (ctypes.sizeof(info) << 32)
    attr[1] = ctypes.addressof(info)
    r, _ = _bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    return info if r == 0 else None


def count_keys(fd, key_size, max_entries):
    """Keys in the map now. A key deleted under the walk restarts it from the first key,
    so keys are collected in a set and the walk is bounded."""
    seen = set()
    cur = ctypes.create_string_buffer(key_size)
    nxt = ctypes.create_string_buffer(key_size)
    attr = (ctypes.c_uint64 * 16)()
    have = False
    for _ in range(2 * max_entries + 2):
        attr[0] = fd
        attr[1] = ctypes.addressof(cur) if have else 0
        attr[2] = ctypes.addressof(nxt)
        r, _ = _bpf(BPF_MAP_GET_NEXT_KEY, attr)
        if r != 0:
            break
        k = nxt.raw
        if k in seen and len(seen) >= max_entries:
            break
        seen.add(k)
        ctypes.memmove(cur, nxt, key_size)
        have = True
    return len(seen)


def proc_maps(pid):
    """({map id: (name, type, entries, max_entries)} of the hash maps pid holds fds of,
    the netfilter link fds among its fds, its fds), from one listing."""
    ids = set()
    nf_links = 0
    base = f"/proc/{pid}/fdinfo"
    fds = os.listdir(base)
    for fd in fds:
        try:
            with open(f"{base}/{fd}") as f:
                text = f.read()
        except OSError:
            continue
        m = re.search(r"^map_id:\s*(\d+)", text, re.M)
        if m:
            ids.add(int(m.group(1)))
        elif re.search(r"^link_type:\s*netfilter", text, re.M):
            nf_links += 1
    out = {}
    for mid in sorted(ids):
        fd = map_fd(mid)
        if fd is None:
            continue
        try:
            info = map_info(fd)
            if info is None or info.type not in HASH_TYPES:
                continue
            n = count_keys(fd, info.key_size, info.max_entries)
            out[mid] = (info.name.decode(errors="replace"), info.type, n, info.max_entries)
        finally:
            os.close(fd)
    return out, nf_links, len(fds)


# --- process and metrics ------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def fetch(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read().decode()
    except OSError:
        return ""


METRIC = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
LABEL = re.compile(r'(\w+)="([^"]*)"')


def parse_metrics(text):
    """[(name, {labels}, value)] of the text exposition."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = METRIC.match(line)
        if m:
            labels = dict(LABEL.findall(m.group(2) or ""))
            try:
                out.append((m.group(1), labels, float(m.group(3))))
            except ValueError:
                pass
    return out


def metric_sum(ms, name, **want):
    return sum(v for n, l, v in ms if n == name and all(l.get(k) == w for k, w in want.items()))


def losses(ms):
    """What the tool says it did not record (all counted, never silent)."""
    return {
        "lost_events": metric_sum(ms, "netstack_lat_lost_events_total"),
        "unfinished": metric_sum(ms, "netstack_lat_chains_unfinished_total"),
        "series_full": metric_sum(ms, "netstack_lat_spans_unrecorded_total", why="series_full"),
        "sockq_unjoined": metric_sum(ms, "netstack_lat_join_misses_total", why="sockq_unjoined"),
    }


def queued(ms, proto, netns_name):
    """Packets the tool saw queued to a socket in that namespace."""
    return metric_sum(
        ms,
        "netstack_lat_span_latency_seconds_count",
        span="rx_transport->rx_sockq",
        proto=proto,
        netns_name=netns_name,
    )


def veth_packets(ns, dev):
    try:
        j = json.loads(
            subprocess.run(
                ["ip", "-n", ns, "-j", "-s", "link", "show", "dev", dev],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout
        )
        s = j[0]["stats64"]
        return s["rx"]["packets"], s["tx"]["packets"]
    except (OSError, ValueError, KeyError, IndexError, subprocess.SubprocessError):
        return 0, 0


def netns_count():
    try:
        return len(os.listdir("/run/netns"))
    except OSError:
        return 0


COLUMNS = [
    "t_s", "proc", "rss_kb", "fds", "nf_link_fds", "fixed_fds", "cpu_pct", "map_entries", "maps_full",
    "metrics_lines",
    "lost_events", "unfinished", "series_full", "veth_rx_pps", "veth_tx_pps", "netns",
]


def cmd_sample(a):
    procs = [p.split("=", 1) for p in a.proc]  # name=pid=url
    procs = [(n, int(rest.split("=", 1)[0]), rest.split("=", 1)[1]) for n, rest in procs]
    ns, dev = a.dev.split(":", 1)
    f = open(a.csv, "w", newline="")
    w = csv.writer(f)
    w.writerow(COLUMNS)
    fm = open(a.maps_csv, "w", newline="")
    wm = csv.writer(fm)
    wm.writerow(["t_s", "proc", "map_id", "name", "type", "entries", "max_entries"])
    t0 = time.monotonic()
    last = {}
    k = 0
    while True:
        due = t0 + k * a.every
        time.sleep(max(0.0, due - time.monotonic()))
        now = time.monotonic()
        t = round(now - t0, 1)
        rx, tx = veth_packets(ns, dev)
        lrx, ltx, lt = last.get("veth", (rx, tx, now))
        dt = max(now - lt, 1e-9)
        rx_pps, tx_pps = (rx - lrx) / dt, (tx - ltx) / dt
        last["veth"] = (rx, tx, now)
        for name, pid, url in procs:
            try:
                ticks = cpu_ticks(pid)
                rss = rss_kb(pid)
                maps, links, fds = proc_maps(pid)
            except OSError:
                print(f"soak_report: {name} (pid {pid}) is gone", file=sys.stderr)
                return 1
            lticks, lnow = last.get(name, (ticks, now))
            cpu = 100.0 * (ticks - lticks) / CLK_TCK / max(now - lnow, 1e-9)
            last[name] = (ticks, now)
            text = fetch(url)
            ms = parse_metrics(text)
            lo = losses(ms)
            entries = sum(m[2] for m in maps.values())
            full = sum(1 for m in maps.values() if m[2] >= m[3])
            # Netfilter links (one set per namespace) come and go with the churned
            # namespaces: the fds judged are the others.
            w.writerow([
                t, name, rss, fds, links, fds - links, round(cpu, 1), entries, full, len(text.splitlines()),
                int(lo["lost_events"]), int(lo["unfinished"]), int(lo["series_full"]),
                round(rx_pps), round(tx_pps), netns_count(),
            ])
            for mid, (mname, mtype, n, mx) in maps.items():
                wm.writerow([t, name, mid, mname, mtype, n, mx])
        f.flush()
        fm.flush()
        if now - t0 >= a.seconds - 0.5:
            return 0
        k += 1


# --- judging --------------------------------------------------------------------------------------


def growth(points, key):
    """(growth over the last half, first value of that half, peak in it): the peak against
    the value where the last half starts, both after warm-up."""
    if len(points) < 2:
        return 0.0, 0, 0
    end = points[-1]["t_s"]
    half = [p for p in points if p["t_s"] >= end / 2]
    start = half[0][key]
    peak = max(p[key] for p in half)
    if peak - start <= SLACK.get(key, 0):
        return 0.0, start, peak
    return (peak - start) / max(start, 1), start, peak


def load_csv(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k, v in r.items():
            if k not in ("proc", "name"):
                r[k] = float(v)
    return rows


def judge(rows, maps, send, sink, finals, ns_b):
    """[(check, measured, verdict)] and whether everything passed."""
    checks, ok = [], True

    def add(what, measured, good):
        nonlocal ok
        ok &= good
        checks.append((what, measured, "pass" if good else "FAIL"))

    for proc in sorted({r["proc"] for r in rows}):
        pts = [r for r in rows if r["proc"] == proc]
        for key in ("rss_kb", "fixed_fds", "map_entries"):
            g, a, b = growth(pts, key)
            add(f"{proc}: {key} growth over the last half", f"{a:.0f} -> peak {b:.0f} ({100 * g:+.1f}%)",
                g <= GROWTH_LIMIT)
        # Shown, not judged (the issue judges memory, fds and map entries): series of
        # namespaces that went away stay in /metrics.
        g, a, b = growth(pts, "metrics_lines")
        checks.append((f"{proc}: /metrics lines over the last half (not judged)",
                       f"{a:.0f} -> peak {b:.0f} ({100 * g:+.1f}%)", "info"))
        mp = [m for m in maps if m["proc"] == proc]
        for mid in sorted({m["map_id"] for m in mp}):
            series = [dict(m, map_entries=m["entries"]) for m in mp if m["map_id"] == mid]
            g, a, b = growth(series, "map_entries")
            name = series[0]["name"]
            if g > GROWTH_LIMIT:
                add(f"{proc}: map {name} growth over the last half", f"{a:.0f} -> {b:.0f}", False)
            last = series[-1]
            if last["entries"] >= last["max_entries"]:
                add(f"{proc}: map {name} not full at the end",
                    f"{last['entries']:.0f} of {last['max_entries']:.0f}", False)
        ms = finals.get(proc, [])
        lo = losses(ms)
        counted = sum(lo.values())
        for proto, truth, what in (
            ("udp", sink["udp_received"], "datagrams the sink read"),
            ("tcp", sink["conns_served"], "connections the sink served (>= 1 request segment each)"),
        ):
            seen = queued(ms, proto, ns_b)
            missing = max(0.0, truth - seen - counted)
            add(f"{proc}: {what}, in its counts or its loss counters",
                f"{truth:.0f} truth, {seen:.0f} seen queued, {counted:.0f} counted lost: "
                f"{missing:.0f} uncounted", missing == 0)
    return checks, ok


# --- SVG, by hand (no plotting package on the machine) ---------------------------------------------

PANELS = [
    ("rss_kb", "RSS (MiB)", 1 / 1024),
    ("fixed_fds", "open fds, less netfilter links (per namespace)", 1),
    ("map_entries", "BPF hash map entries", 1),
    ("lost_events", "lost events (counted)", 1),
]
COLORS = {"serve": "#1f77b4", "trace": "#d62728"}


def svg(rows, title):
    W, H, PW, PH, M = 900, 4 * 190 + 60, 760, 140, 70
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="15">{title}</text>']
    tmax = max((r["t_s"] for r in rows), default=1) or 1
    procs = sorted({r["proc"] for r in rows})
    for i, (key, label, scale) in enumerate(PANELS):
        y0 = 50 + i * 190
        vals = [r[key] * scale for r in rows]
        vmax = max(vals + [1e-9]) * 1.1
        out.append(f'<rect x="{M}" y="{y0}" width="{PW}" height="{PH}" fill="none" stroke="#999"/>')
        out.append(f'<text x="{M}" y="{y0 - 6}">{label}</text>')
        for frac in (0, 0.5, 1):
            v = vmax * frac
            y = y0 + PH - frac * PH
            out.append(f'<text x="{M - 6}" y="{y + 4:.1f}" text-anchor="end">{v:.4g}</text>')
        # The judged window: the last half.
        out.append(f'<rect x="{M + PW / 2}" y="{y0}" width="{PW / 2}" height="{PH}" fill="#eee" opacity="0.5"/>')
        for proc in procs:
            pts = [(r["t_s"], r[key] * scale) for r in rows if r["proc"] == proc]
            path = " ".join(f"{M + PW * t / tmax:.1f},{y0 + PH - PH * v / vmax:.1f}" for t, v in pts)
            out.append(f'<polyline fill="none" stroke="{COLORS.get(proc, "#333")}" stroke-width="1.5" points="{path}"/>')
        out.append(f'<text x="{M + PW}" y="{y0 + PH + 14}" text-anchor="end">{tmax / 60:.1f} min</text>')
        out.append(f'<text x="{M}" y="{y0 + PH + 14}">0</text>')
    for j, proc in enumerate(procs):
        out.append(f'<text x="{M + PW - 120 + 60 * j}" y="40" fill="{COLORS.get(proc, "#333")}">{proc}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def cmd_judge(a):
    rows = load_csv(f"{a.dir}/soak.csv")
    maps = load_csv(f"{a.dir}/maps.csv")
    send = json.load(open(f"{a.dir}/send.json"))
    sink = json.load(open(f"{a.dir}/sink.json"))
    finals = {}
    for proc in {r["proc"] for r in rows}:
        try:
            finals[proc] = parse_metrics(open(f"{a.dir}/final-{proc}.metrics").read())
        except OSError:
            finals[proc] = []
    checks, ok = judge(rows, maps, send, sink, finals, a.netns)
    dur = rows[-1]["t_s"] if rows else 0
    load = [r for r in rows if r["proc"] == rows[0]["proc"] and r["t_s"] > 0]
    rx = sorted(r["veth_rx_pps"] for r in load)
    tx = sorted(r["veth_tx_pps"] for r in load)
    med = lambda v: v[len(v) // 2] if v else 0
    lines = [
        f"# Soak run: {'PASS' if ok else 'FAIL'}",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, kernel {os.uname().release}, "
        f"{os.cpu_count()} CPUs; {dur / 60:.1f} min, sampled every {a.every} s; warm-up: the first half.",
        "",
        f"Load (nsl-load soak-send): {send['udp_pps']:.0f} UDP datagrams/s sent "
        f"({send['udp_sent']} in all, {send['udp_skipped']} skipped by a sender that fell behind, "
        f"{send['udp_errors']} send errors), {send['conns_per_s']:.0f} TCP connections/s "
        f"({send['conns_ok']} completed, {send['conns_failed']} failed) each with a one-datagram UDP socket; "
        f"the sink read {sink['udp_received']} datagrams and served {sink['conns_served']} connections.",
        f"Packets/s on the receiving veth (median of the samples): {med(rx):.0f} in, {med(tx):.0f} out, "
        f"{med(rx) + med(tx):.0f} both ways.",
        "",
        "| check | measured | |",
        "|---|---|---|",
    ] + [f"| {c} | {m} | {v} |" for c, m, v in checks]
    lines += ["", "| proc | first sample | at half | end |", "|---|---|---|---|"]
    for proc in sorted({r["proc"] for r in rows}):
        pts = [r for r in rows if r["proc"] == proc]
        mid = min(pts, key=lambda r: abs(r["t_s"] - dur / 2))
        fmt = lambda r: (f"RSS {r['rss_kb'] / 1024:.1f} MiB, {r['fds']:.0f} fds "
                         f"({r['nf_link_fds']:.0f} netfilter links), "
                         f"{r['map_entries']:.0f} map entries, CPU {r['cpu_pct']:.0f}%")
        lines.append(f"| {proc} | {fmt(pts[0])} | {fmt(mid)} | {fmt(pts[-1])} |")
    text = "\n".join(lines) + "\n"
    open(f"{a.dir}/summary.md", "w").write(text)
    open(f"{a.dir}/soak.svg", "w").write(svg(rows, f"netstack-lat soak, {dur / 60:.1f} min"))
    sys.stdout.write(text)
    return 0 if ok else 1


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sample")
    s.add_argument("--proc", action="append", required=True, help="NAME=PID=METRICS_URL")
    s.add_argument("--dev", required=True, help="NETNS:DEV whose packet rate is the load")
    s.add_argument("--every", type=float, default=10)
    s.add_argument("--seconds", type=float, required=True)
    s.add_argument("--csv", required=True)
    s.add_argument("--maps-csv", required=True)
    j = sub.add_parser("judge")
    j.add_argument("--dir", required=True)
    j.add_argument("--netns", required=True, help="the sink's namespace name")
    j.add_argument("--every", type=float, default=10)
    a = p.parse_args()
    return cmd_sample(a) if a.cmd == "sample" else cmd_judge(a)


if __name__ == "__main__":
    sys.exit(main())
