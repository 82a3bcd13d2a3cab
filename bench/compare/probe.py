#!/usr/bin/env python3
"""Measurements of the machine beside the comparison (stdlib only; run.sh calls it).

    probe.py disk --dir D --seconds S [--tag k=v ...]
        The raw disk's O_DSYNC figures in D (a fresh file per write size, appended
        to like our log's segments, then deleted): per size the latency of each
        write at 1 in flight (p50/p99/mean), writes/s and MB/s. Prints ONE JSON line.

    probe.py window --pid-dir D --delay W --duration T [--interval I] [--tag k=v ...]
        Sleeps W (the driver's warm-up), then over T seconds: the 1-min load average
        and the /proc/stat counters at both ends (machine CPU busy and iowait
        fractions), the CPU time used by the members, and their resident memory
        (VmRSS, summed over each member's session: a member that forks counts its
        children) sampled every I seconds, max per member. Prints ONE JSON line.

    probe.py rss --pid-dir D [--tag k=v ...]
        One VmRSS sample of every member. Prints ONE JSON line.

Members are found through the pid files D/n0.pid, D/n1.pid, D/n2.pid that
cluster.sh and ours.sh write (each member is started by setsid, so its pid is
also its session id).
"""
import argparse
import glob
import json
import os
import sys
import time

KIB = 1024
MIB = 1024 * 1024


def pct(sorted_xs, q):
    """Nearest-rank percentile of an ascending list."""
    if not sorted_xs:
        return None
    k = max(0, min(len(sorted_xs) - 1, int(-(-q * len(sorted_xs) // 1)) - 1))
    return sorted_xs[k]


def mount_of(path):
    """(mount point, device, fs type) holding path, from /proc/mounts."""
    path = os.path.realpath(path)
    best = ("/", "?", "?")
    try:
        for line in open("/proc/mounts"):
            dev, mnt, fstype = line.split()[:3]
            mnt = mnt.replace("\\040", " ")
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[0]):
                best = (mnt, dev, fstype)
    except OSError:
        pass
    return best


def disk(args):
    os.makedirs(args.dir, exist_ok=True)
    mnt, dev, fstype = mount_of(args.dir)
    out = tags({}, args.tag)
    out.update({"dir": args.dir, "mount": mnt, "device": dev, "fs": fstype,
           "seconds_per_size": args.seconds, "how": "O_WRONLY|O_CREAT|O_DSYNC, sequential appends to a fresh file, 1 in flight",
           "sizes": []})
    for size in [int(s) for s in args.sizes.split(",")]:
        path = os.path.join(args.dir, f"dsync-{size}.probe")
        buf = os.urandom(size)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DSYNC, 0o600)
        lat = []
        written = 0
        try:
            for _ in range(3):              # warm-up: not counted
                os.write(fd, buf)
            t0 = time.perf_counter()
            end = t0 + args.seconds
            while True:
                a = time.perf_counter()
                n = os.write(fd, buf)
                b = time.perf_counter()
                if n != size:
                    raise OSError(f"short write of {n} bytes")
                lat.append(b - a)
                written += n
                if b >= end or written >= args.max_bytes:
                    break
            elapsed = time.perf_counter() - t0
        finally:
            os.close(fd)
            os.unlink(path)
        lat.sort()
        out["sizes"].append({
            "bytes": size, "writes": len(lat), "elapsed_s": round(elapsed, 3),
            "p50_ms": round(pct(lat, 0.50) * 1e3, 4), "p99_ms": round(pct(lat, 0.99) * 1e3, 4),
            "mean_ms": round(sum(lat) / len(lat) * 1e3, 4),
            "writes_per_s": round(len(lat) / elapsed, 1),
            "mb_per_s": round(written / elapsed / 1e6, 2),
        })
    print(json.dumps(out))


def members(pid_dir):
    """{"n0": pid, ...} from the pid files."""
    found = {}
    for f in sorted(glob.glob(os.path.join(pid_dir, "n*.pid"))):
        try:
            found[os.path.basename(f)[:-4]] = int(open(f).read().strip())
        except (OSError, ValueError):
            pass
    return found


def proc_table():
    """pid -> (ppid, session, utime+stime ticks) of every process."""
    table = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            s = open(f"/proc/{d}/stat").read()
        except OSError:
            continue
        rest = s[s.rfind(")") + 2:].split()
        try:
            table[int(d)] = (int(rest[1]), int(rest[3]), int(rest[11]) + int(rest[12]))
        except (IndexError, ValueError):
            pass
    return table


def tree(pid, table):
    """The member's processes: pid, everything in its session, and its descendants."""
    procs = {p for p, (_, sid, _) in table.items() if sid == pid}
    if pid in table:
        procs.add(pid)
    grew = True
    while grew:
        kids = {p for p, (pp, _, _) in table.items() if pp in procs and p not in procs}
        grew = bool(kids)
        procs |= kids
    return procs


def rss_kib(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def sample(pid_dir):
    """({member: rss KiB}, {member: cpu ticks}) now."""
    table = proc_table()
    rss, ticks = {}, {}
    for name, pid in members(pid_dir).items():
        procs = tree(pid, table)
        if not procs:
            continue
        rss[name] = sum(rss_kib(p) for p in procs)
        ticks[name] = sum(table[p][2] for p in procs if p in table)
    return rss, ticks


def cpu_counters():
    """(total, idle+iowait, iowait) jiffies from /proc/stat."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
    return sum(f), f[3] + f[4], f[4]


def load1():
    return float(open("/proc/loadavg").read().split()[0])


def tags(out, pairs):
    for kv in pairs or []:
        k, _, v = kv.partition("=")
        for conv in (int, float, str):
            try:
                out[k] = conv(v)
                break
            except ValueError:
                pass
    return out


def window(args):
    out = tags({}, args.tag)
    time.sleep(args.delay)
    t0, c0, l0 = time.monotonic(), cpu_counters(), load1()
    rss_max, ticks0 = sample(args.pid_dir)
    end = t0 + args.duration
    ticks1 = dict(ticks0)
    while True:
        left = end - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(args.interval, left))
        rss, ticks = sample(args.pid_dir)
        for k, v in rss.items():
            rss_max[k] = max(rss_max.get(k, 0), v)
        ticks1.update(ticks)
    t1, c1, l1 = time.monotonic(), cpu_counters(), load1()
    total = max(1, c1[0] - c0[0])
    hz = os.sysconf("SC_CLK_TCK")
    out.update({
        "window_s": round(t1 - t0, 2), "load1_start": l0, "load1_end": l1,
        "cpu_busy": round(1 - (c1[1] - c0[1]) / total, 3),
        "cpu_iowait": round((c1[2] - c0[2]) / total, 3),
        "cores": os.cpu_count(),
        # CPU the members used, in cores (1.0 = one core busy for the whole window).
        "members_cpu_cores": round(sum(ticks1.get(k, 0) - ticks0.get(k, 0) for k in ticks0) / hz / max(t1 - t0, 1e-3), 3)
        if ticks0 else None,
        "rss_max_kib": rss_max,
    })
    print(json.dumps(out))


def rss(args):
    out = tags({}, args.tag)
    out["rss_kib"] = sample(args.pid_dir)[0]
    out["load1"] = load1()
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("disk")
    d.add_argument("--dir", required=True)
    d.add_argument("--seconds", type=float, default=2.0)
    d.add_argument("--sizes", default=f"{4 * KIB},{64 * KIB},{MIB}")
    d.add_argument("--max-bytes", type=int, default=512 * MIB, help="stop a size early after this many bytes")
    d.add_argument("--tag", action="append")
    w = sub.add_parser("window")
    w.add_argument("--pid-dir", required=True)
    w.add_argument("--delay", type=float, default=0.0)
    w.add_argument("--duration", type=float, required=True)
    w.add_argument("--interval", type=float, default=0.5)
    w.add_argument("--tag", action="append")
    r = sub.add_parser("rss")
    r.add_argument("--pid-dir", required=True)
    r.add_argument("--tag", action="append")
    a = ap.parse_args()
    {"disk": disk, "window": window, "rss": rss}[a.cmd](a)


if __name__ == "__main__":
    try:
        main()
    except (OSError, ValueError) as e:
        print(f"probe.py: {e}", file=sys.stderr)
        sys.exit(1)
