#!/usr/bin/env python3
"""Turns the comparison's JSON lines into BENCHMARKS.md and a latency/throughput plot.

    report.py --results DIR --md BENCHMARKS.md --png latency-throughput.png

DIR holds results.jsonl (one line per matrix cell), failover.jsonl (one line per
leader kill), run.json (the command, the machine, the bounds), disk.jsonl (the raw
disk's O_DSYNC figures, one line per run.sh invocation) and machine.jsonl (per cell:
load, CPU busy, the members' CPU and resident memory; per group: idle memory).
Results from before disk.jsonl/machine.jsonl existed render with those figures
"not measured". Rerunning this on the same files regenerates the same report.
"""
import argparse
import json
import os
import statistics
import sys

# Display order, display name and the plain words for each system's durability.
SYSTEMS = [
    ("dledger", "dledger-replica (ours)", "fsync: acknowledged once a majority has fdatasync'ed it (group commit)"),
    ("dledger-pagecache", "dledger-replica (ours), page cache", "page cache: acknowledged once a majority has it in memory, before fsync"),
    ("dledger-java", "DLedger (openmessaging, Java)", "page cache: acknowledged once a majority has it in its mmap'ed file; a background thread flushes every 10 ms; DLedger has no option to sync before acknowledging"),
    ("etcd", "etcd", "fsync: the leader and a majority fdatasync the WAL before the Put is acknowledged (always on)"),
    ("nats", "NATS JetStream", "page cache: a quorum of replicas has the message, fsync every 2 min (default sync_interval)"),
    ("nats-always", "NATS JetStream, sync_interval: always", "fsync: each replica fsyncs every write before it counts"),
    ("kafka", "Kafka (KRaft)", "page cache: acks=all waits for every in-sync replica (min.insync.replicas=2) to have it in memory; Kafka leaves flushing to the OS (default)"),
    ("kafka-flush", "Kafka (KRaft), flush.messages=1", "fsync: every replica flushes the log after each message (topic flush.messages=1)"),
    ("ceiling", "ceiling: the leanest replication (bench/ceiling)", "fsync: the leader and one follower have fdatasync'ed it; one thread per member, no elections, no limits: a bound to read the others against, not a product"),
]
NAME = {k: n for k, n, _ in SYSTEMS}
FSYNC = {"dledger", "etcd", "nats-always", "kafka-flush", "ceiling"}
CEILING = "ceiling"
# Ratio pairs: ours vs each peer at equal durability.
RATIO_PAIRS = [("dledger", p) for p in ("etcd", "nats-always", "kafka-flush")] + \
              [("dledger-pagecache", p) for p in ("dledger-java", "nats", "kafka")]
RATIO_AT = (1024, 64)
# The physical bound (see disk_bound): members sharing the disk, and the bytes our
# store writes per entry besides its payload (replica/src/store/frame.rs).
MEMBERS = 3
FRAME_HEADER_BYTES = 28
NOT_MEASURED = "not measured"


def load(path):
    rows = []
    if os.path.exists(path):
        for line in open(path):
            line = line.strip()
            if line.startswith("{"):
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    print(f"report: skipping a malformed line in {path}: {line[:80]}", file=sys.stderr)
    return rows


def fmt_ops(x):
    return f"{x:,.0f}"


def fmt_ms(x):
    return f"{x:.2f}" if x < 100 else f"{x:.0f}"


def size(b):
    if b >= 1024 * 1024 and b % (1024 * 1024) == 0:
        return f"{b // (1024 * 1024)} MiB"
    return f"{b // 1024} KiB" if b >= 1024 else f"{b} B"


def latest_failover_runs(kills):
    """An appended failover run of a system replaces its earlier one: keep,
    per system, only the lines from its last `"kill": 1` on."""
    last_start = {}
    for i, k in enumerate(kills):
        if k.get("kill") == 1:
            last_start[k.get("system")] = i
    return [k for i, k in enumerate(kills) if i >= last_start.get(k.get("system"), 0)]


def disk_latency(probe):
    """Seconds one O_DSYNC write of `size` bytes takes at 1 in flight, from the probe:
    the mean at each measured size (1 / writes per s), linear in between; below the
    smallest size that size's (a short write still costs a page and a flush); above
    the largest, the largest size's bandwidth."""
    pts = sorted((s["bytes"], 1.0 / s["writes_per_s"]) for s in probe.get("sizes", []) if s.get("writes_per_s"))

    def lat(size):
        if size <= pts[0][0]:
            return pts[0][1]
        for (s0, l0), (s1, l1) in zip(pts, pts[1:]):
            if size <= s1:
                return l0 + (l1 - l0) * (size - s0) / (s1 - s0)
        return pts[-1][1] * size / pts[-1][0]
    return lat if pts else None


def disk_bound(probe, payload, inflight):
    """Upper bound on durable commits/s for a cell, from the raw disk.

    Latency term: with N writes outstanding, one commit round can at best batch all
    N entries (N x (payload + frame header) bytes) into one O_DSYNC write on the
    leader, with the follower's identical write fully overlapping it: <= N / L(N x e).
    Bandwidth term: every member writes every entry to the same disk, so
    commits/s x MEMBERS x e <= the best O_DSYNC bandwidth measured.
    """
    lat = disk_latency(probe)
    if lat is None:
        return None
    e = payload + FRAME_HEADER_BYTES
    best_bw = max(s["mb_per_s"] for s in probe["sizes"]) * 1e6
    return min(inflight / lat(inflight * e), best_bw / (MEMBERS * e))


def disk_runs(lines):
    """disk.jsonl -> one list of probes per run.sh invocation (each starts with its
    "phase": "start" probe, then its "end" one)."""
    runs = []
    for d in lines:
        if not d.get("sizes"):
            continue
        if not runs or d.get("phase", "start") == "start":
            runs.append([])
        runs[-1].append(d)
    return runs


def best_of(run):
    """One probe from a run's probes: per size, the one that wrote fastest."""
    best = {}
    for pr in run:
        for sz in pr["sizes"]:
            if sz.get("writes_per_s") and sz["writes_per_s"] > best.get(sz["bytes"], {}).get("writes_per_s", 0):
                best[sz["bytes"]] = dict(sz, phase=pr.get("phase", "start"))
    merged = dict(run[0])
    merged["sizes"] = [best[b] for b in sorted(best)]
    return merged


def fmt_frac(x):
    return f"{100 * x:.0f}%" if x >= 0.01 else f"{100 * x:.1f}%"


def mib(kib):
    return f"{kib / 1024:.0f}"


def members_rss(d):
    """ "n0 / n1 / n2" in MiB from {"n0": KiB, ...}."""
    if not d:
        return NOT_MEASURED
    return " / ".join(mib(d[k]) for k in sorted(d))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--md", required=True)
    ap.add_argument("--png", required=True)
    a = ap.parse_args()
    rows = load(os.path.join(a.results, "results.jsonl"))
    kills = latest_failover_runs(load(os.path.join(a.results, "failover.jsonl")))
    meta = {}
    if os.path.exists(os.path.join(a.results, "run.json")):
        meta = json.load(open(os.path.join(a.results, "run.json")))
    probes = disk_runs(load(os.path.join(a.results, "disk.jsonl")))
    probe = best_of(probes[0]) if probes else None
    load_rows, idle_rows = {}, {}   # (system, payload, inflight) -> row; system -> [rows]
    for m in load(os.path.join(a.results, "machine.jsonl")):
        if m.get("phase") == "load":
            load_rows[(m.get("system"), m.get("payload_bytes"), m.get("in_flight"))] = m
        elif m.get("phase") == "idle":
            idle_rows.setdefault(m.get("system"), []).append(m)

    cells = {}          # (system, payload, inflight) -> row
    failed = []         # rows with an error
    not_measured = {}   # system -> reason
    versions, clients = {}, {}
    for r in rows:
        s = r.get("system")
        if "not_measured" in r:
            not_measured[s] = r["not_measured"]
        elif "error" in r:
            failed.append(r)
        else:
            cells[(s, r["payload_bytes"], r["in_flight"])] = r
            versions[s] = r.get("version", "")
            clients[s] = r.get("client", "")
    # A later appended run that measured a system supersedes an earlier "not measured".
    for measured in {c[0] for c in cells}:
        not_measured.pop(measured, None)
    present = [k for k, _, _ in SYSTEMS if any(c[0] == k for c in cells) or k in not_measured
               or any(f.get("system") == k for f in failed)]
    if not present:
        present = [k for k, _, _ in SYSTEMS]

    md = []
    out = md.append
    out("# Side-by-side: dledger-replica, DLedger, etcd, NATS JetStream, Kafka")
    out("")
    out("Generated by `bench/compare/report.py` from the results of one run of")
    out("`bench/compare/run.sh`; rerun the command below to regenerate this page and the plot.")
    out("Where our write path spends its time, what to change first, and what the changes made so far "
        "gained (before/after at 1, 16, 64 and 256 in flight): `bench/profile.md`.")
    out("What mutual TLS costs our group (throughput at 1 KiB and 64 in flight, failover), measured apart "
        "from this run: `bench/tls-cost.md`.")
    out("")
    out("## How this was produced")
    out("")
    out(f"- Command: `{meta.get('command', 'bash bench/compare/run.sh')}`")
    for extra in meta.get("extra_commands", []):
        out(f"- Then, appended to the same results: `{extra}`")
    if meta.get("extra_commands"):
        out(f"- The appended runs took {meta.get('extra_elapsed_s', 0) / 60:.1f} min in all and ran later than "
            "the first, under whatever load the machine had then; rerun the first command alone to measure "
            "every system in one run.")
    mode = "quick (CI smoke run)" if meta.get("quick") else "full"
    out(f"- Mode: {mode}; per cell {meta.get('warmup_s', '?'):g} s warm-up then {meta.get('duration_s', '?'):g} s measured; "
        f"{meta.get('kills', '?')} leader kills per system; whole run took {meta.get('elapsed_s', 0) / 60:.1f} min.")
    out(f"- Machine: {meta.get('cpu', '?')}, {meta.get('cores', '?')} cores, {meta.get('mem_gib', '?')} GiB, "
        f"Linux {meta.get('kernel', '?')}; every member, client and driver on this one machine, over loopback.")
    out(f"- Load average (1 min) when the run started / ended: {meta.get('load1_start', '?')} / {meta.get('load1_end', '?')}. "
        "This machine is shared; other work running at the same time lowers every figure, so compare the "
        "systems with each other within this run rather than with other machines.")
    out("- Each system: three members on 127.0.0.1 with their own ports and a fresh data directory under /tmp "
        "(a fresh group per payload size; Kafka keeps its group and gets a fresh topic), one system at a time.")
    out("")
    physical_bound(out, probes, probe, cells, present)
    out("## Systems, clients and durability")
    out("")
    out("| system | version | driven by | durability (when is a write acknowledged?) |")
    out("|---|---|---|---|")
    for k, n, d in SYSTEMS:
        if k not in present:
            continue
        v = versions.get(k) or ("not measured" if k in not_measured else "")
        c = clients.get(k) or ("`dledger-replica bench` (not available yet)" if k in not_measured else "")
        out(f"| {n} | {v} | {c} | {d} |")
    out("")
    out("Workload, the same for all: N writes kept outstanding at all times (N threads or goroutines, each "
        "issuing its next write as soon as the previous one is acknowledged), a payload of fixed size, "
        "latency measured per write from issue to acknowledgement, for writes issued after the warm-up and "
        "acknowledged before the end; throughput = acknowledged writes / measured seconds. "
        "\"In flight\" therefore means outstanding *writes* everywhere: for Kafka these are N records that "
        "the producer may batch into fewer produce requests (linger.ms=0, so it never waits to fill a batch), "
        "just as etcd and JetStream batch concurrent proposals internally. etcd writes a fresh key per Put; "
        "Kafka writes to a topic of one partition with replication factor 3 and min.insync.replicas=2, so one "
        "broker leads it like the other systems' single leader; JetStream writes to one file-backed stream with "
        "3 replicas. Percentiles are nearest-rank over every sample.")
    out("")

    out("## Throughput and latency")
    out("")
    out("\"Of disk bound\" is the cell's throughput as a fraction of the raw disk's bound for that payload and "
        "in-flight level (section \"Physical bound\"; fsync systems only: the page-cache ones do not wait for "
        "the disk). \"Of ceiling\" is the same against the leanest replication measured in this run "
        "(`bench/ceiling`, same cell). \"CPU busy\" is the whole machine's, over the measured window, with the members' own share "
        "in cores after the slash (the rest is the driver and anything else running).")
    out("")
    out("| system | version | durability | payload | in flight | throughput (writes/s) | of disk bound | of ceiling | p50 ms | p99 ms | p99.9 ms | errors | CPU busy / members' cores |")
    out("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for k, n, _ in SYSTEMS:
        if k not in present:
            continue
        dur = "fsync" if k in FSYNC else "page cache"
        if k in not_measured:
            out(f"| {n} | – | {dur} | all | all | not measured | | | | | | | |")
            continue
        keys = sorted((c for c in cells if c[0] == k), key=lambda c: (c[1], c[2]))
        for c in keys:
            r = cells[c]
            if k not in FSYNC:
                frac = "–"
            elif probe is None:
                frac = NOT_MEASURED
            else:
                b = disk_bound(probe, r["payload_bytes"], r["in_flight"])
                frac = fmt_frac(r["throughput_ops"] / b) if b else NOT_MEASURED
            of_ceiling = of_ceiling_cell(cells, c)
            out(f"| {n} | {r.get('version', '')} | {dur} | {size(r['payload_bytes'])} | {r['in_flight']} | "
                f"{fmt_ops(r['throughput_ops'])} | {frac} | {of_ceiling} | {fmt_ms(r['p50_ms'])} | {fmt_ms(r['p99_ms'])} | "
                f"{fmt_ms(r['p999_ms'])} | {r.get('errors', 0)} | {fmt_cpu(load_rows.get(c))} |")
        for f in failed:
            if f.get("system") == k:
                out(f"| {n} | {f.get('version', '')} | {dur} | {size(f['payload_bytes'])} | {f['in_flight']} | "
                    f"failed: {f['error']} | | | | | | | |")
    out("")

    machine_and_memory(out, present, cells, load_rows, idle_rows, not_measured)

    out(f"## Ours against each peer ({size(RATIO_AT[0])}, {RATIO_AT[1]} in flight, equal durability)")
    out("")
    out("Ratio = ours / peer: throughput above 1 and latency below 1 favour ours.")
    out("")
    out("| ours | peer | throughput ratio | p50 ratio | p99 ratio |")
    out("|---|---|---:|---:|---:|")
    for ours, peer in RATIO_PAIRS:
        if peer not in present:
            continue
        o = cells.get((ours, *RATIO_AT))
        p = cells.get((peer, *RATIO_AT))
        if o is None or p is None:
            why = "not measured" if o is None else "peer not measured"
            out(f"| {NAME[ours]} | {NAME[peer]} | {why} | | |")
            continue

        def ratio(x, y):
            return f"{x / y:.2f}" if y else "–"
        out(f"| {NAME[ours]} | {NAME[peer]} | {ratio(o['throughput_ops'], p['throughput_ops'])} | "
            f"{ratio(o['p50_ms'], p['p50_ms'])} | {ratio(o['p99_ms'], p['p99_ms'])} |")
    out("")

    out("## Failover: kill -9 of the leader under light load")
    out("")
    out("One writer issuing a 128 B write every 10 ms (each write given 1 s, then retried); the leader "
        "(for Kafka the partition leader, for JetStream the stream leader) is found through the system's "
        "own API, killed with SIGKILL, and the gap is the time from the kill until the first write issued "
        "after it is acknowledged. The killed member is then restarted and must rejoin (caught up / back "
        "in the in-sync set) before the next kill. Every system runs with its default timeouts.")
    out("")
    out("| system | kills | min ms | median ms | p90 ms | max ms |")
    out("|---|---:|---:|---:|---:|---:|")
    by = {}
    for k in kills:
        if "gap_ms" in k:
            by.setdefault(k["system"], []).append(k["gap_ms"])
    for k, n, _ in SYSTEMS:
        if k not in present:
            continue
        g = sorted(by.get(k, []))
        if not g:
            if k in ("dledger", "etcd", "nats", "kafka", "dledger-java"):
                why = "not run (no kills asked)" if meta.get("kills") == 0 else "not measured"
                out(f"| {n} | 0 | {why} | | | |")
            continue
        p90 = g[min(len(g) - 1, max(0, int(round(0.9 * len(g))) - 1))]
        out(f"| {n} | {len(g)} | {g[0]:.0f} | {statistics.median(g):.0f} | {p90:.0f} | {g[-1]:.0f} |")
    out("")
    out("Default failure detection behind these gaps: etcd elects after a 1 s election timeout; DLedger "
        "after 3 missed 2 s heartbeats; JetStream after its Raft election timeout plus the client's "
        "reconnect; Kafka after the controller fences the broker (broker.session.timeout.ms = 9 s) and "
        "moves partition leadership. The gap includes the client's own recovery: a write sent to the dead "
        "leader waits out its 1 s timeout before the next is issued, so gaps come in steps of about 1 s "
        "where the client sticks to the dead member (etcd's gRPC balancer shows this: 1 s or 2 s).")
    out("")
    rel_png = os.path.relpath(a.png, os.path.dirname(os.path.abspath(a.md)))
    out("## Latency against throughput")
    out("")
    out(f"![p50 and p99 latency against throughput]({rel_png})")
    out("")
    out("One panel per payload size; each line is one system, its points the in-flight levels "
        "(1, 16, 64, 256 from left to right as load grows); solid = p50, dotted = p99.")
    out("")
    open(a.md, "w").write("\n".join(md))
    plot(cells, present, a.png)
    print(f"report: wrote {a.md} and {a.png}", file=sys.stderr)


def of_ceiling_cell(cells, c):
    """An fsync system's throughput in cell c as a fraction of the ceiling's."""
    if c[0] not in FSYNC or c[0] == CEILING:
        return "–"
    top = cells.get((CEILING, c[1], c[2]))
    if not top or not top["throughput_ops"]:
        return NOT_MEASURED
    return fmt_frac(cells[c]["throughput_ops"] / top["throughput_ops"])


def ceiling_bound(out, cells, present):
    out("### The leanest replication this machine runs, measured in the same run")
    out("")
    if CEILING not in present or not any(c[0] == CEILING for c in cells):
        out("Not measured in this run (`--systems` left out `ceiling`).")
        out("")
        return
    out("The disk's bound above leaves out the CPU, the network and the scheduler, and on a small machine "
        "those cost more than the disk. `bench/ceiling` measures them: three processes on loopback, one "
        "thread each, doing only what our durability needs. The leader reads whatever requests have "
        "arrived, writes them to a pre-written file, sends them to both followers, fdatasyncs and answers "
        "each request once it and one follower hold it durably. A follower checks every record's CRC, "
        "writes, fdatasyncs once per batch and acknowledges. It has no elections, heartbeats, limits, "
        "metrics or recovery, so no system with this durability should expect to pass it on this machine. "
        "Its driver is its own, a single thread keeping N requests in flight on one connection.")
    out("")
    payloads = sorted({c[1] for c in cells if c[0] == CEILING})
    levels = sorted({c[2] for c in cells if c[0] == CEILING})
    out("| | payload | " + " | ".join(f"{n} in flight" for n in levels) + " |")
    out("|---|---|" + "---:|" * len(levels))
    for p in payloads:
        out(f"| **ceiling**, writes/s | {size(p)} | "
            + " | ".join(fmt_ops(r["throughput_ops"]) if (r := cells.get((CEILING, p, n))) else NOT_MEASURED
                         for n in levels) + " |")
    for k, name, _ in SYSTEMS:
        if k not in FSYNC or k == CEILING or k not in present:
            continue
        for p in payloads:
            vals = [of_ceiling_cell(cells, (k, p, n)) if (k, p, n) in cells else "–" for n in levels]
            if any(v != "–" for v in vals):
                out(f"| {name} | {size(p)} | " + " | ".join(vals) + " |")
    out("")


def fmt_cpu(m):
    if not m or m.get("cpu_busy") is None:
        return NOT_MEASURED
    own = m.get("members_cpu_cores")
    return f"{fmt_frac(m['cpu_busy'])} / {own:.2f}" if own is not None else fmt_frac(m["cpu_busy"])


def physical_bound(out, probes, probe, cells, present):
    out("## Physical bound: the raw disk and the leanest replication, measured in the same run")
    out("")
    if probe is None:
        out("Raw disk: not measured (these results predate the disk probe; rerun `bench/compare/run.sh` to "
            "measure it). Every \"of disk bound\" figure below is therefore not measured.")
        out("")
        ceiling_bound(out, cells, present)
        return
    out(f"Before any system started and again after the last one stopped, `bench/compare/probe.py disk` "
        f"wrote to a fresh file in the run's work "
        f"directory ({probe.get('dir', '?')}: `{probe.get('device', '?')}`, {probe.get('fs', '?')}, the "
        f"filesystem every member's data directory is on) with `O_DSYNC`, appending one write at a time "
        f"like our log's segments, {probe.get('seconds_per_size', '?'):g} s per size, 1 in flight. The disk "
        "is shared with everything else on the machine, so the two can differ a lot; the bound credits the "
        "disk, per size, with the faster of the two (marked *), and a cell can still exceed 100% when the disk "
        "was quieter during it than during either probe. The sizes are the ones our store writes: one "
        "group-commit batch is one write plus one fdatasync, so a lone 1 KiB entry costs a 4 KiB page, 64 "
        "entries of 1 KiB about 64 KiB, and a full replication batch 1 MiB (`max_batch_bytes`).")
    out("")
    out("| probe | load avg | write size | writes | p50 ms | p99 ms | writes/s (1 in flight) | MB/s |")
    out("|---|---:|---|---:|---:|---:|---:|---:|")
    used = {(sz["bytes"], sz["phase"]) for sz in probe["sizes"]}
    for i, run in enumerate(probes):
        for pr in run:
            ph = pr.get("phase", "start")
            label = (f"{ph} of run" if i == 0 else f"appended run {i}, {ph} (not used for the bound)")
            for sz in pr["sizes"]:
                mark = " *" if i == 0 and (sz["bytes"], ph) in used else ""
                out(f"| {label} | {pr.get('load1', '?')} | {size(sz['bytes'])}{mark} | {sz['writes']:,} | "
                    f"{sz['p50_ms']:.3f} | {sz['p99_ms']:.3f} | {fmt_ops(sz['writes_per_s'])} | {sz['mb_per_s']:,.0f} |")
    out("")
    small = min(probe["sizes"], key=lambda s: s["bytes"])
    best = max(probe["sizes"], key=lambda s: s["mb_per_s"])
    out(f"**The bound.** All {MEMBERS} members of a group share this one disk. A durable commit needs the "
        "entry on disk on the leader and on one follower; those two syncs run in parallel, and we assume, "
        "optimistically, that they overlap perfectly and that the network, the CPU and the third member cost "
        "nothing. With N writes outstanding, a commit round can at best put all N entries into one O_DSYNC "
        "write, so commits/s ≤ N / L(N × e), where e = payload + 28 B (our frame header) and L(size) is the "
        "measured time of one O_DSYNC write of that size (linear between the sizes above). And every member "
        f"writes every entry, so commits/s ≤ best O_DSYNC bandwidth / ({MEMBERS} × e). The bound is the "
        "smaller of the two. It counts only the log's bytes: etcd also writes its bbolt backend and Kafka its "
        "indexes, so theirs is, if anything, lower.")
    out("")
    bw = best["mb_per_s"]
    out(f"- 1 in flight, small entries: ≤ {fmt_ops(small['writes_per_s'])} commits/s "
        f"(1 / the {size(small['bytes'])} O_DSYNC write's {1e3 / small['writes_per_s']:.3f} ms mean; "
        f"{1e3 / small['p50_ms']:,.0f}/s from its p50).")
    out(f"- Many in flight: ≤ {bw:,.0f} MB/s ({size(best['bytes'])} O_DSYNC writes) / ({MEMBERS} × e): "
        + ", ".join(f"{fmt_ops(bw * 1e6 / (MEMBERS * (p + FRAME_HEADER_BYTES)))}/s for {size(p)}"
                    for p in (128, 1024, 16384)) + ".")
    out("")
    payloads = sorted({c[1] for c in cells}) or [128, 1024, 16384]
    levels = sorted({c[2] for c in cells}) or [1, 16, 64, 256]
    out("Bound in commits/s per payload and in-flight level, and what each fsync system reached of it:")
    out("")
    out("| | payload | " + " | ".join(f"{n} in flight" for n in levels) + " |")
    out("|---|---|" + "---:|" * len(levels))
    for p in payloads:
        out(f"| **bound** | {size(p)} | " + " | ".join(fmt_ops(b) if (b := disk_bound(probe, p, n)) else NOT_MEASURED
                                                    for n in levels) + " |")
    for k, name, _ in SYSTEMS:
        if k not in FSYNC or k not in present:
            continue
        for p in payloads:
            vals = []
            for n in levels:
                r = cells.get((k, p, n))
                b = disk_bound(probe, p, n) if r else None
                vals.append(fmt_frac(r["throughput_ops"] / b) if b else "–")
            if any(v != "–" for v in vals):
                out(f"| {name} | {size(p)} | " + " | ".join(vals) + " |")
    out("")
    ceiling_bound(out, cells, present)


def machine_and_memory(out, present, cells, load_rows, idle_rows, not_measured):
    out("## Machine load and memory per system")
    out("")
    out("Sampled by `bench/compare/probe.py` during each cell's measured window: the 1-min load average at "
        "its start and end, the whole machine's CPU busy fraction (1 − idle − iowait, from /proc/stat) and "
        "the members' own CPU (utime + stime of each member's processes, in cores); and each member's "
        "resident memory (VmRSS summed over the member's processes), once when its group had started, "
        "before any load (\"idle\"), and every 0.5 s during the measured windows. The RSS columns are MiB "
        "per member, n0 / n1 / n2; \"top load\" is the largest over the windows at the highest in-flight "
        "level. Kafka's two variants share one group, so kafka-flush's idle figure comes after kafka's load.")
    out("")
    out("| system | cells | load avg (1 min) | CPU busy, mean (min–max) | iowait | members' CPU, cores | "
        "RSS idle, MiB | RSS at top load, MiB |")
    out("|---|---:|---|---|---:|---:|---|---|")
    for k, n, _ in SYSTEMS:
        if k not in present:
            continue
        if k in not_measured:
            out(f"| {n} | 0 | {NOT_MEASURED} | | | | | |")
            continue
        rows = [m for c, m in load_rows.items() if c[0] == k and m.get("cpu_busy") is not None]
        ncells = sum(1 for c in cells if c[0] == k)
        if rows:
            loads = [x for m in rows for x in (m.get("load1_start"), m.get("load1_end")) if x is not None]
            busy = [m["cpu_busy"] for m in rows]
            iow = [m.get("cpu_iowait", 0) for m in rows]
            own = [m["members_cpu_cores"] for m in rows if m.get("members_cpu_cores") is not None]
            la = f"{min(loads):.2f}–{max(loads):.2f}" if loads else NOT_MEASURED
            cpu = f"{fmt_frac(statistics.mean(busy))} ({fmt_frac(min(busy))}–{fmt_frac(max(busy))})"
            io = fmt_frac(statistics.mean(iow))
            owns = f"{statistics.mean(own):.2f}" if own else NOT_MEASURED
        else:
            la, cpu, io, owns = NOT_MEASURED, "–", "–", "–"
        idle = {}
        for m in idle_rows.get(k, []):
            for mem, v in (m.get("rss_kib") or {}).items():
                idle[mem] = max(idle.get(mem, 0), v)
        top_level = max((c[2] for c in load_rows if c[0] == k), default=None)
        top = {}
        for c, m in load_rows.items():
            if c[0] == k and c[2] == top_level:
                for mem, v in (m.get("rss_max_kib") or {}).items():
                    top[mem] = max(top.get(mem, 0), v)
        top_s = f"{members_rss(top)} ({top_level} in flight)" if top else NOT_MEASURED
        out(f"| {n} | {ncells} | {la} | {cpu} | {io} | {owns} | {members_rss(idle)} | {top_s} |")
    out("")


def plot(cells, present, png):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    payloads = sorted({c[1] for c in cells}) or [1024]
    fig, axes = plt.subplots(1, len(payloads), figsize=(6.2 * len(payloads), 5.2), squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, p in zip(axes[0], payloads):
        for i, (k, n, _) in enumerate(SYSTEMS):
            pts = sorted(((c[2], cells[c]) for c in cells
                          if c[0] == k and c[1] == p and cells[c]["throughput_ops"] > 0),
                         key=lambda t: t[0])
            if not pts or k not in present:
                continue
            xs = [r["throughput_ops"] for _, r in pts]
            col = colors(i % 10)
            ax.plot(xs, [r["p50_ms"] for _, r in pts], "-o", color=col, label=n, markersize=4)
            ax.plot(xs, [r["p99_ms"] for _, r in pts], ":", color=col, linewidth=1.2)
            for nflight, r in pts:
                ax.annotate(str(nflight), (r["throughput_ops"], r["p50_ms"]), fontsize=6,
                            xytext=(2, 2), textcoords="offset points", color=col)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("throughput (acknowledged writes/s, log)")
        ax.set_ylabel("latency ms (log): p50 solid, p99 dotted")
        ax.set_title(f"payload {size(p)}")
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    ncol = max(1, min(len(labels), 2 * len(payloads)))
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=8)
    rows = -(-max(1, len(labels)) // ncol)
    fig.tight_layout(rect=(0, 0.04 + 0.045 * rows, 1, 1))
    fig.savefig(png, dpi=110)


if __name__ == "__main__":
    main()
