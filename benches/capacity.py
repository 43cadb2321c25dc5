#!/usr/bin/env python3
"""The capacity method of issue 13; run it through benches/capacity.sh.

For each number of calls N (and each I/O backend): start `voxproxy echo` on
the rig CPU, `voxproxy serve --workers 1` alone on the proxy CPU, then
`voxproxy sim --workers 1 --proxy-pid PID` on the rig CPU with N calls whose
media lasts S seconds plus the ramp, so all N overlap for S seconds. The
simulator reports frames, round trip and the proxy's cost from /proc (CPU
user and system per bridged frame over the steady window, while at least
95 % of the most calls seen are up; resident memory per call over the baseline; open files). This
script adds the proxy's own media-path histogram (GET /metrics), the load
average, open files once the proxy has settled after the run, the rig's own
CPU (simulator plus echo, over the whole run and over the steady window:
is the rig the bottleneck?), the run's worst second (from the simulator's
timeline), and writes capacity.json, capacity.svg and capacity.md.

Standard library only, so it runs wherever python3 does.
"""

import argparse
import datetime
import json
import os
import platform
import random
import resource
import signal
import statistics
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

TOKEN = "capacity-bench-token"
FRAME_PROCESSING = "voxproxy_frame_processing_seconds"
TWILIO_LATE = "voxproxy_twilio_burst_seconds"
JITTER_WAIT = "voxproxy_jitter_buffer_wait_seconds"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", default="50,200,600,1000", help="comma-separated numbers of calls, one run each")
    p.add_argument("--seconds", type=float, default=20.0, help="seconds all calls overlap, after the ramp")
    p.add_argument("--ramp", type=float, default=100.0, help="calls started per second")
    p.add_argument("--io", default="epoll", help="comma-separated I/O backends: epoll, uring")
    p.add_argument("--bin", default="target/release/voxproxy", help="the voxproxy binary")
    p.add_argument("--out", default=None, help="output directory (default target/capacity/<UTC time>)")
    p.add_argument("--proxy-cpu", type=int, default=1, help="CPU the proxy alone runs on")
    p.add_argument("--rig-cpu", type=int, default=0, help="CPU the simulator and echo backend share")
    p.add_argument(
        "--perf",
        action="store_true",
        help="also `perf record -g` the proxy for up to 10 s of each steady window; top symbols in NAME-perf.txt",
    )
    p.add_argument(
        "--record",
        action="store_true",
        help="run each N twice, without and with recording.enabled (WAVs in a temp dir, deleted after), to compare",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of each configuration, interleaved; the summary gives medians",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="20 calls x 3 s; fail unless every call completes, frames come back and open files settle",
    )
    p.add_argument(
        "--soak",
        action="store_true",
        help="also sample the proxy's resident memory and open files every 10 s of each run, and judge it as a "
        "soak: memory within +/-5 %% from minute 2 to the end of the calls, open files back to the baseline after, "
        "0 missing (e.g. --calls 500 --seconds 1800 --soak); exits non-zero when a run fails the verdict",
    )
    args = p.parse_args()
    if args.smoke:
        args.calls, args.seconds = "20", 3.0
    args.calls = [int(n) for n in args.calls.split(",") if n.strip()]
    args.io = [io.strip() for io in args.io.split(",") if io.strip()]
    if not args.calls or min(args.calls) < 1 or args.seconds <= 0 or args.ramp <= 0 or args.repeat < 1:
        p.error("--calls needs positive numbers, --seconds, --ramp and --repeat positive values")
    if any(io not in ("epoll", "uring") for io in args.io):
        p.error("--io takes epoll and/or uring")
    return args


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wakeup_oversleep(cpus, seconds):
    """How late the idle machine wakes a thread from a 1 ms sleep, per CPU,
    before the runs (a cyclictest in miniature, in µs: p50 / p99 / p99.9 /
    max and the count over 2 ms). A hypervisor that runs a vCPU late shows
    here; a round trip's tail cannot be shorter than the machine's."""

    def probe(cpu, out):
        os.sched_setaffinity(0, {cpu})
        late, end = [], time.monotonic() + seconds
        while time.monotonic() < end:
            t = time.monotonic()
            time.sleep(0.001)
            late.append(time.monotonic() - t - 0.001)
        late.sort()
        q = lambda f: round(late[min(int(len(late) * f), len(late) - 1)] * 1e6)
        out[str(cpu)] = {"p50": q(0.5), "p99": q(0.99), "p99_9": q(0.999), "max": round(late[-1] * 1e6),
                         "over_2ms": sum(1 for x in late if x > 0.002), "samples": len(late)}

    out = {}
    threads = [threading.Thread(target=probe, args=(cpu, out)) for cpu in cpus]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
    }


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def open_fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def steal_ticks():
    """Per CPU, the ticks the hypervisor ran something else (/proc/stat's steal column)."""
    ticks = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *fields = line.split()
            if name.startswith("cpu") and name != "cpu" and len(fields) >= 8:
                ticks[int(name[3:])] = int(fields[7])
    return ticks


def cpu_seconds(pid):
    """User and system CPU seconds of a live process, from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # Fields 14 and 15 (utime, stime), counted after the command's ")".
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def rss_bytes(pid):
    """Resident memory of a live process, from /proc/PID/status."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class RigWindow(threading.Thread):
    """The rig's CPU (simulator plus echo) over the steady window, from their
    /proc stat at the window's start and end, `begin` and `end` seconds after
    the simulator started. The whole-run figure averages in the ramp, when
    fewer calls are up, so it understates what the rig needs at full load."""

    def __init__(self, pids, begin, end, cpus):
        super().__init__(daemon=True)
        self.pids, self.begin, self.end, self.cpus = pids, begin, end, cpus
        self.stopped = threading.Event()
        self.cores = None
        # Time the hypervisor took from each CPU over the window (ms, tick
        # sampled): a stall the host caused, not the proxy or the rig.
        self.steal_ms = None

    def total(self):
        values = [cpu_seconds(pid) for pid in self.pids]
        return None if None in values else sum(values)

    def run(self):
        if self.end - self.begin < 2 or self.stopped.wait(self.begin):
            return
        first, steal0, t0 = self.total(), steal_ticks(), time.monotonic()
        if self.stopped.wait(self.end - self.begin):
            return
        last, steal1, t1 = self.total(), steal_ticks(), time.monotonic()
        if None not in (first, last):
            self.cores = round((last - first) / (t1 - t0), 2)
        tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
        self.steal_ms = {
            str(cpu): round((steal1[cpu] - steal0[cpu]) * tick_ms) for cpu in self.cpus if cpu in steal0 and cpu in steal1
        }

    def stop(self):
        """The rig's cores and each CPU's steal (ms) over the window; `None` for what was not measured."""
        self.stopped.set()
        self.join()
        return self.cores, self.steal_ms


class Sampler(threading.Thread):
    """Every `every` seconds: the proxy's resident memory, open files and CPU seconds, until stopped."""

    def __init__(self, pid, every=10.0):
        super().__init__(daemon=True)
        self.pid, self.every, self.samples, self.done = pid, every, [], threading.Event()
        self.began = time.monotonic()

    def run(self):
        while not self.done.is_set():
            self.samples.append(
                {
                    "t": round(time.monotonic() - self.began, 1),
                    "rss_kib": (rss_bytes(self.pid) or 0) // 1024,
                    "open_fds": open_fds(self.pid),
                    "cpu_seconds": cpu_seconds(self.pid),
                }
            )
            self.done.wait(self.every)

    def stop(self):
        self.done.set()
        self.join()
        return self.samples


def soak_verdict(samples, calls, ramp, media, run):
    """Memory within +/-5 % of its value at minute 2 while all calls are up, files settled, nothing missing."""
    window = [s for s in samples if 120.0 <= s["t"] <= media - 2.0]
    verdict = {"samples": len(samples), "window_samples": len(window), "problems": []}
    if len(window) < 2:
        verdict["problems"].append(f"only {len(window)} samples between minute 2 and the end of the calls: run longer")
    else:
        base = window[0]["rss_kib"]
        lo, hi = min(s["rss_kib"] for s in window), max(s["rss_kib"] for s in window)
        verdict.update(
            rss_kib_at_minute_2=base,
            rss_kib_min=lo,
            rss_kib_max=hi,
            rss_drift_percent=[round((lo / base - 1) * 100, 2), round((hi / base - 1) * 100, 2)],
            rss_kib_at_end=window[-1]["rss_kib"],
        )
        if lo < base * 0.95 or hi > base * 1.05:
            verdict["problems"].append(f"resident memory {lo}-{hi} KiB against {base} KiB at minute 2 (beyond +/-5 %)")
    if run["frames_missing"]:
        verdict["problems"].append(f"{run['frames_missing']} frames missing")
    if run["open_fds_settled"] != run["open_fds_before"]:
        verdict["problems"].append(f"open files {run['open_fds_before']} before, {run['open_fds_settled']} after")
    if run["calls_completed"] != calls:
        verdict["problems"].append(f"{run['calls_completed']} of {calls} calls completed")
    verdict["passed"] = not verdict["problems"]
    return verdict


def http_get(url, timeout=5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode()


def wait_healthy(base, proc, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"voxproxy serve exited with {proc.returncode} before it was healthy")
        try:
            if http_get(base + "/healthz", 1.0)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"voxproxy serve was not healthy within {timeout} s")


def histogram_buckets(metrics_text, family, split_by=None):
    """Cumulative (bound µs, count) rows of histogram `family`, grouped by label `split_by` (None: one group)."""
    buckets = {}
    prefix = family + "_bucket{"
    for line in metrics_text.splitlines():
        if not line.startswith(prefix):
            continue
        labels, value = line[len(prefix) :].rsplit("} ", 1)
        fields = dict(part.split("=", 1) for part in labels.split(","))
        group = fields[split_by].strip('"') if split_by else None
        le = fields["le"].strip('"')
        bound = float("inf") if le == "+Inf" else float(le) * 1e6
        buckets.setdefault(group, []).append((bound, float(value)))
    for rows in buckets.values():
        rows.sort()
    return buckets


def bucket_quantiles(rows, scale=1.0):
    """Frames and the bucket bounds (µs / scale) holding p50/p99/p99.9, or None when empty."""
    total = rows[-1][1] if rows else 0
    if total == 0:
        return None
    out = {"frames": int(total)}
    for name, q in (("p50_le", 0.5), ("p99_le", 0.99), ("p99_9_le", 0.999)):
        bound = next(b for b, cumulative in rows if cumulative >= q * total)
        out[name] = None if bound == float("inf") else round(bound / scale, 3)
    return out


def media_path(metrics_text):
    """Bucket bounds (µs) holding p50/p99/p99.9 of the proxy's media path, per direction."""
    out = {}
    for direction, rows in histogram_buckets(metrics_text, FRAME_PROCESSING, "direction").items():
        q = bucket_quantiles(rows)
        if q is not None:
            out[direction] = {k if k == "frames" else k + "_us": v for k, v in q.items()}
    return out


def latency_breakdown(metrics_text, report):
    """Where the round trip goes, in ms: the simulator's pacing and its wait to read frames back
    (exact), and from the proxy's histograms (bucket bounds) Twilio's lateness as the proxy saw
    it and the jitter buffer's wait."""
    ms = lambda q: {k: None if (q or {}).get(k) is None else round(q[k] / 1000, 3) for k in ("p50", "p99", "p99_9")}
    out = {
        "sim_send_late": ms(report.get("send_lateness_us")),
        # The simulator's own wait to read each frame back (from the kernel's
        # receive stamp), and the round trip without it: the rig's receive
        # queue taken out of the tail.
        "sim_read_wait": ms(report.get("receive_wait_us")),
        "round_trip_less_sim_read_wait": ms(report.get("latency_at_kernel_us")),
    }
    for key, family in (("proxy_twilio_late", TWILIO_LATE), ("jitter_buffer_wait", JITTER_WAIT)):
        out[key] = bucket_quantiles(histogram_buckets(metrics_text, family).get(None, []), scale=1000)
    # A stall that leaves every shared receive buffer waiting for its call
    # shows as starved receives (io_uring only; absent on epoll).
    ring = metric_values(metrics_text, ("voxproxy_uring_starved_total", "voxproxy_uring_buffers_held_peak"))
    for key, name in (("uring_starved", "voxproxy_uring_starved_total"), ("uring_buffers_held_peak", "voxproxy_uring_buffers_held_peak")):
        if name in ring:
            out[key] = int(ring[name])
    return out


def metric_values(metrics_text, names):
    """The values of the unlabelled samples `names` in a /metrics scrape (absent ones left out)."""
    values = {}
    for line in metrics_text.splitlines():
        name, _, value = line.partition(" ")
        if name in names:
            values[name] = float(value)
    return values


def start_perf(args, pid, calls, out_dir, name):
    """`perf record -g` of the proxy over the steady window (after the ramp, at most 10 s)."""
    if not args.perf:
        return None
    delay, length = calls / args.ramp + 1.0, min(10.0, max(args.seconds - 2.0, 1.0))
    data = os.path.join(out_dir, f"{name}.perf.data")
    command = f"sleep {delay:.1f}; exec perf record -g -q -o {data} -p {pid} -- sleep {length:.1f}"
    return subprocess.Popen(["sh", "-c", command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def finish_perf(profiler, out_dir, name):
    if profiler is None:
        return
    profiler.wait(60)
    data = os.path.join(out_dir, f"{name}.perf.data")
    with open(os.path.join(out_dir, f"{name}-perf.txt"), "w") as out:
        for sort in ("dso,sym", "dso"):
            subprocess.run(
                ["perf", "report", "-i", data, "--no-children", "--sort", sort, "--stdio", "-g", "none"],
                stdout=out,
                stderr=subprocess.DEVNULL,
                timeout=300,
            )


def stop(proc, timeout=15.0):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def settle_fds(pid, target, timeout=5.0):
    """Open files of the proxy once its calls have ended (records written, sockets closed)."""
    deadline = time.monotonic() + timeout
    fds = open_fds(pid)
    while fds is not None and target is not None and fds > target and time.monotonic() < deadline:
        time.sleep(0.1)
        fds = open_fds(pid)
    return fds


def one_run(args, io, calls, out_dir, record=False, attempt=1):
    name = f"{io}-{calls}" + ("-rec" if record else "") + (f"-{attempt}" if args.repeat > 1 else "")
    port, echo_port = free_port(), free_port(socket.SOCK_DGRAM)
    width = max(2 * calls, 200)
    rtp_lo = random.randrange(20000, 60000 - width)
    base = f"http://127.0.0.1:{port}"
    env = dict(
        os.environ,
        TWILIO_AUTH_TOKEN=TOKEN,
        # One client address places every call; barge-in would cut the echoed
        # caller's own voice.
        VOXPROXY_LIMITS_WEBHOOK_RATE_PER_IP="0",
        VOXPROXY_VAD_BARGE_IN="false",
        VOXPROXY_LIMITS_MAX_CALLS=str(max(calls, 2000)),
        VOXPROXY_CDR_PATH=os.path.join(out_dir, f"{name}-cdr.jsonl"),
    )
    # Recordings are large (64 KB per call-second): a temp dir, deleted after.
    recordings = tempfile.TemporaryDirectory(prefix="voxproxy-capacity-rec-") if record else None
    if recordings is not None:
        env.update(VOXPROXY_RECORDING_ENABLED="true", VOXPROXY_RECORDING_DIR=recordings.name)
    logs = {k: open(os.path.join(out_dir, f"{name}-{k}.log"), "w") for k in ("echo", "serve", "sim")}
    rig = ["taskset", "-c", str(args.rig_cpu)]
    echo = subprocess.Popen(
        rig + [args.bin, "echo", "--listen", f"127.0.0.1:{echo_port}"], stdout=logs["echo"], stderr=subprocess.STDOUT
    )
    serve = subprocess.Popen(
        ["taskset", "-c", str(args.proxy_cpu), args.bin, "serve", "--workers", "1", "--io", io]
        + ["--listen", f"127.0.0.1:{port}", "--public-url", base, "--backend", f"127.0.0.1:{echo_port}"]
        + ["--rtp-ports", f"{rtp_lo}-{rtp_lo + width - 1}"],
        env=env,
        stdout=logs["serve"],
        stderr=subprocess.STDOUT,
    )
    try:
        wait_healthy(base, serve)
        time.sleep(0.5)  # let the baseline settle
        media = args.seconds + calls / args.ramp
        report_path = os.path.join(out_dir, f"{name}-sim.json")
        load_before = loadavg()
        profiler = start_perf(args, serve.pid, calls, out_dir, name)
        sampler = Sampler(serve.pid) if args.soak else None
        if sampler is not None:
            sampler.start()
        echo_cpu, sim_cpu, began = cpu_seconds(echo.pid), children_cpu_seconds(), time.monotonic()
        sim = subprocess.Popen(
            rig
            + [args.bin, "sim", "--url", base, "--calls", str(calls), "--seconds", f"{media:.2f}"]
            + ["--ramp", str(args.ramp), "--workers", "1", "--proxy-pid", str(serve.pid), "--json", report_path],
            env=env,
            stdout=logs["sim"],
            stderr=subprocess.STDOUT,
        )
        # Every call is up a frame after its place in the ramp, plus its set-up.
        ramp_end = calls / args.ramp + 1.0
        rig_window = RigWindow(
            [sim.pid, echo.pid], ramp_end + 1.0, ramp_end + args.seconds - 1.0, (args.proxy_cpu, args.rig_cpu)
        )
        rig_window.start()
        try:
            sim.wait(timeout=media + calls / args.ramp + 120)
        except subprocess.TimeoutExpired:
            sim.kill()
            sim.wait()
            rig_window.stop()
            # The simulator paces by the wall clock, so overrunning means the
            # rig's core could not keep up. Keep what the sampler saw.
            if sampler is not None:
                with open(os.path.join(out_dir, f"{name}-soak.json"), "w") as f:
                    json.dump({"samples": sampler.stop(), "verdict": {"passed": False}}, f, indent=2)
            sys.exit(
                f"capacity: {name}: the simulator was still running {media + calls / args.ramp + 120:.0f} s "
                "after it started: the rig fell behind real time (is its CPU shared?)"
            )
        wall = time.monotonic() - began
        rig_steady_cores, steal_ms = rig_window.stop()
        samples = sampler.stop() if sampler is not None else None
        echo_after = cpu_seconds(echo.pid)
        rig_cpu = {
            "sim_seconds": round(children_cpu_seconds() - sim_cpu, 2),
            "echo_seconds": None if None in (echo_cpu, echo_after) else round(echo_after - echo_cpu, 2),
            "wall_seconds": round(wall, 2),
            "steady_cores": rig_steady_cores,
        }
        load_after = loadavg()
        finish_perf(profiler, out_dir, name)
        with open(report_path) as f:
            report = json.load(f)
        cost = report.get("proxy_cost") or {}
        fds_settled = settle_fds(serve.pid, cost.get("open_fds_before"))
        scraped = http_get(base + "/metrics")[1]
        with open(os.path.join(out_dir, f"{name}-metrics.prom"), "w") as f:
            f.write(scraped)
        metrics = media_path(scraped)
        breakdown = latency_breakdown(scraped, report)
        recorded = recording_totals(recordings, scraped) if recordings else None
    finally:
        stop(serve)
        stop(echo)
        for f in logs.values():
            f.close()
        if recordings is not None:
            recordings.cleanup()
    run = summarize(io, calls, args.seconds, report, cost, metrics, fds_settled, load_before, load_after, sim.returncode)
    run["recording"] = recorded
    run["attempt"] = attempt
    breakdown["echo_read_wait"] = echo_read_wait(os.path.join(out_dir, f"{name}-echo.log"))
    run["latency_breakdown_ms"] = breakdown
    run["rig"] = rig_summary(rig_cpu, run)
    run["timeline"] = timeline_summary(report.get("timeline") or [])
    run["steady_steal_ms"] = steal_ms
    if samples is not None:
        run["soak"] = soak_verdict(samples, calls, args.ramp, media, run)
        with open(os.path.join(out_dir, f"{name}-soak.json"), "w") as f:
            json.dump({"samples": samples, "verdict": run["soak"]}, f, indent=2)
    return run


def timeline_summary(seconds, bound_ms=5.0):
    """From the simulator's per-second timeline: how many seconds' round trip
    p99 went over `bound_ms`, and the worst second (by p99), with how late the
    simulator itself sent in it (a tail the rig caused shows there)."""
    busy = [s for s in seconds if s["frames"] > 0]
    if not busy:
        return None
    worst = max(busy, key=lambda s: s["p99_us"])
    return {
        "seconds": len(busy),
        "seconds_p99_over_ms": bound_ms,
        "seconds_p99_over": sum(1 for s in busy if s["p99_us"] > bound_ms * 1000),
        "worst": {
            "second": worst["second"],
            "p50_ms": worst["p50_us"] / 1000,
            "p99_ms": worst["p99_us"] / 1000,
            "max_ms": worst["max_us"] / 1000,
            "frames": worst["frames"],
            "sent": worst["sent"],
            "sim_send_late_max_ms": worst["send_late_max_us"] / 1000,
        },
    }


def echo_read_wait(log_path):
    """How long datagrams waited in the echo's socket for its thread (from the
    kernel's receive stamps), in ms, from the summary the echo prints as it stops."""
    try:
        with open(log_path) as f:
            lines = [l for l in f if "read wait p50" in l]
    except OSError:
        return None
    if not lines:
        return None
    words = lines[-1].split("read wait ")[1].replace(",", "").split()
    # "p50 N µs p99 N µs max N µs"
    values = {words[i]: int(words[i + 1]) / 1000 for i in range(0, len(words) - 1, 3)}
    return {"p50": values.get("p50"), "p99": values.get("p99"), "max": values.get("max")}


def rig_summary(rig_cpu, run):
    """The rig's (simulator + echo) CPU over the whole run, ramp included."""
    total = None if rig_cpu["echo_seconds"] is None else rig_cpu["sim_seconds"] + rig_cpu["echo_seconds"]
    frames = run["frames_sent"] + run["frames_returned"]
    return dict(
        rig_cpu,
        cores=None if total is None else round(total / max(rig_cpu["wall_seconds"], 1e-9), 2),
        cpu_us_per_frame=None if total is None or frames == 0 else round(total * 1e6 / frames, 2),
        sim_us_per_frame=None if frames == 0 else round(rig_cpu["sim_seconds"] * 1e6 / frames, 2),
        echo_us_per_frame=None if total is None or frames == 0 else round(rig_cpu["echo_seconds"] * 1e6 / frames, 2),
    )


def recording_totals(recordings, metrics_text):
    """Files and bytes the recorded run left, and what the proxy counted as dropped or failed."""
    files = [os.path.join(recordings.name, f) for f in os.listdir(recordings.name)]
    counters = metric_values(metrics_text, ("voxproxy_recording_dropped_bytes_total", "voxproxy_recording_errors_total"))
    return {
        "files": len(files),
        "bytes": sum(os.path.getsize(f) for f in files),
        "dropped_bytes": counters.get("voxproxy_recording_dropped_bytes_total"),
        "errors": counters.get("voxproxy_recording_errors_total"),
    }


def summarize(io, calls, seconds, report, cost, metrics, fds_settled, load_before, load_after, sim_exit):
    frames, latency = report["frames"], report.get("latency_us") or {}
    steady = cost.get("steady") or {}
    ms = lambda v: None if v is None else round(v / 1000, 3)
    r2 = lambda v: None if v is None else round(v, 2)
    return {
        "io": io,
        "calls": calls,
        "seconds": seconds,
        "calls_completed": report["calls"]["completed"],
        "calls_failed": report["calls"]["failed"],
        "failures": report["calls"]["failures"],
        "sim_exit": sim_exit,
        "frames_sent": frames["sent"],
        "frames_returned": frames["received"],
        "frames_missing": frames["missing"],
        "round_trip_ms": {k: ms(latency.get(k)) for k in ("p50", "p99", "p99_9", "max")},
        "media_path_us": metrics,
        "steady": {
            "calls": steady.get("calls"),
            "peak_calls": steady.get("peak_calls"),
            "seconds": r2(steady.get("seconds")),
            "frames": steady.get("frames"),
            "cpu_us_per_frame": r2(steady.get("cpu_us_per_frame")),
            "user_us_per_frame": r2(steady.get("user_us_per_frame")),
            "system_us_per_frame": r2(steady.get("system_us_per_frame")),
            "cores": r2(steady.get("cores")),
        },
        "whole_run_cpu_us_per_frame": r2(cost.get("cpu_us_per_frame")),
        "rss_baseline_kib": None if cost.get("baseline_rss_bytes") is None else cost["baseline_rss_bytes"] // 1024,
        "rss_peak_kib": None if cost.get("peak_rss_bytes") is None else cost["peak_rss_bytes"] // 1024,
        "calls_at_rss_peak": cost.get("calls_at_peak"),
        "rss_kib_per_call": None if cost.get("rss_bytes_per_call") is None else round(cost["rss_bytes_per_call"] / 1024, 1),
        "open_fds_before": cost.get("open_fds_before"),
        "open_fds_after_run": cost.get("open_fds_after"),
        "open_fds_settled": fds_settled,
        "load_average_before": load_before,
        "load_average_after": load_after,
    }


def medians(runs):
    """Per io and number of calls: the median CPU per frame without and with recording, and their ratio."""
    groups = {}
    for r in runs:
        key = (r["io"], r["calls"])
        cpu = r["steady"]["cpu_us_per_frame"]
        if cpu is not None:
            groups.setdefault(key, {}).setdefault("recorded" if r.get("recording") else "plain", []).append(cpu)
    out = []
    for (io, calls), modes in groups.items():
        row = {"io": io, "calls": calls}
        for mode, values in modes.items():
            row[mode] = {"runs": sorted(values), "median_cpu_us_per_frame": statistics.median(values)}
        if "plain" in row and "recorded" in row:
            ratio = row["recorded"]["median_cpu_us_per_frame"] / row["plain"]["median_cpu_us_per_frame"]
            row["recording_cost_percent"] = round((ratio - 1) * 100, 1)
        out.append(row)
    return out


def io_pairs(runs):
    """Per number of calls run on both backends: io_uring against epoll, run by run.

    Runs without recording pair up by their attempt (the two backends run
    back to back, see the loop in main); the summary is the median of the
    pairs' CPU ratios, which is what issue 13's "io_uring at least 25 %
    cheaper" is held to, beside each backend's median CPU and how many of
    its runs kept the round trip's p99 within 5 ms with nothing missing.
    """
    within_5ms = lambda p99: p99 is not None and p99 <= 5.0
    by = {}
    for r in runs:
        if not r.get("recording") and r["steady"]["cpu_us_per_frame"] is not None:
            by.setdefault(r["calls"], {}).setdefault(r["io"], {})[r.get("attempt", 1)] = r
    out = []
    for calls, ios in sorted(by.items()):
        if "epoll" not in ios or "uring" not in ios:
            continue
        attempts = sorted(set(ios["epoll"]) & set(ios["uring"]))
        ratios = [
            ios["uring"][a]["steady"]["cpu_us_per_frame"] / ios["epoll"][a]["steady"]["cpu_us_per_frame"]
            for a in attempts
        ]
        row = {"calls": calls, "pairs": len(ratios), "uring_over_epoll": [round(x, 3) for x in ratios]}
        if ratios:
            row["median_ratio"] = round(statistics.median(ratios), 3)
        for io, rs in ios.items():
            rs = list(rs.values())
            p99 = [r["round_trip_ms"]["p99"] for r in rs if r["round_trip_ms"]["p99"] is not None]
            row[io] = {
                "runs": len(rs),
                "median_cpu_us_per_frame": round(statistics.median(r["steady"]["cpu_us_per_frame"] for r in rs), 2),
                "median_p99_ms": round(statistics.median(p99), 3) if p99 else None,
                "runs_p99_within_5ms": sum(1 for r in rs if r["frames_missing"] == 0 and within_5ms(r["round_trip_ms"]["p99"])),
            }
        out.append(row)
    return out


def fmt(v, pattern="{:,}"):
    return "–" if v is None else pattern.format(v)


def worst_second(t):
    if not t:
        return "–"
    w = t["worst"]
    return (
        f"{t['seconds_p99_over']} of {t['seconds']}; s {w['second']}: {w['p99_ms']:g} / {w['max_ms']:g}, "
        f"{w['sim_send_late_max_ms']:g}"
    )


def markdown(doc):
    lines = [
        f"Measured {doc['date']} on {doc['machine']['cpu']} ({doc['machine']['cpus']} CPUs, Linux "
        f"{doc['machine']['kernel']}, {doc['machine']['memory_gib']} GiB), commit {doc['commit']}: `{doc['command']}`",
        "",
        "Before the runs, the idle machine woke a thread from a 1 ms sleep late by (µs, p50 / p99 / p99.9 / max, "
        "wakes over 2 ms late): "
        + "; ".join(
            f"CPU {cpu} {w['p50']} / {w['p99']} / {w['p99_9']} / {w['max']}, {w['over_2ms']} of {w['samples']}"
            for cpu, w in sorted((doc.get("wakeup_oversleep_us") or {}).items())
        ),
        "",
        "| io | calls | recorded | frames sent / returned / missing | round trip p50 / p99 / p99.9 (ms) "
        "| media path p99 in / out (µs, bucket bound) | proxy CPU per frame: user + system = total (µs) "
        "| proxy cores | RSS per call | open files before / settled | load avg (1 min) before / after "
        "| rig cores whole run / steady, µs per frame (sim + echo) |",
        "| --- | ---: | --- | --- | --- | --- | --- | ---: | ---: | --- | --- | --- |",
    ]
    for r in doc["runs"]:
        rt, st, mp = r["round_trip_ms"], r["steady"], r["media_path_us"]
        path = " / ".join(fmt((mp.get(d) or {}).get("p99_le_us"), "≤ {:g}") for d in ("inbound", "outbound"))
        lines.append(
            f"| {r['io']} | {r['calls']:,} | {'yes' if r.get('recording') else 'no'} | {r['frames_sent']:,} / {r['frames_returned']:,} / {r['frames_missing']:,} "
            f"| {fmt(rt['p50'], '{:.2f}')} / {fmt(rt['p99'], '{:.2f}')} / {fmt(rt['p99_9'], '{:.2f}')} | {path} "
            f"| {fmt(st['user_us_per_frame'], '{:.2f}')} + {fmt(st['system_us_per_frame'], '{:.2f}')} = "
            f"{fmt(st['cpu_us_per_frame'], '{:.2f}')} | {fmt(st['cores'], '{:.2f}')} "
            f"| {fmt(r['rss_kib_per_call'], '{:.1f} KiB')} | {fmt(r['open_fds_before'])} / {fmt(r['open_fds_settled'])} "
            f"| {r['load_average_before'][0]:.2f} / {r['load_average_after'][0]:.2f} "
            f"| {fmt(r['rig']['cores'], '{:.2f}')} / {fmt(r['rig'].get('steady_cores'), '{:.2f}')}, {fmt(r['rig']['cpu_us_per_frame'], '{:.2f}')} "
            f"({fmt(r['rig'].get('sim_us_per_frame'), '{:.2f}')} + {fmt(r['rig'].get('echo_us_per_frame'), '{:.2f}')}) |"
        )
    lines += [
        "",
        "Where the round trip goes (ms): the round trip less the simulator's own wait to read each frame back "
        "(from the kernel's receive stamp, exact) and that wait, the echo's wait to read each datagram (likewise), the simulator's lateness against its 20 ms "
        "schedule (exact; the round trip starts at the actual send), Twilio's lateness as the proxy saw it (which adds the kernel and the "
        "proxy's queue to the simulator's), and the jitter buffer's wait (bucket bounds for the proxy's).",
        "",
        "| io | calls | round trip p50 / p99 | less the simulator's read wait, p50 / p99 | simulator read wait p50 / p99 "
        "| echo read wait p50 / p99 "
        "| simulator late p50 / p99 | proxy saw Twilio late p50 / p99 (≤) "
        "| jitter buffer wait p50 / p99 (≤) | io_uring receives starved, buffers held at peak "
        "| seconds with p99 over 5 ms; worst second: p99 / max, simulator late max |",
        "| --- | ---: | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in doc["runs"]:
        b, rt = r.get("latency_breakdown_ms") or {}, r["round_trip_ms"]
        sim = b.get("sim_send_late") or {}
        pair = lambda q, lo, hi: f"{fmt((q or {}).get(lo), '{:g}')} / {fmt((q or {}).get(hi), '{:g}')}"
        lines.append(
            f"| {r['io']} | {r['calls']:,} | {pair(rt, 'p50', 'p99')} | {pair(b.get('round_trip_less_sim_read_wait'), 'p50', 'p99')} "
            f"| {pair(b.get('sim_read_wait'), 'p50', 'p99')} | {pair(b.get('echo_read_wait'), 'p50', 'p99')} "
            f"| {pair(sim, 'p50', 'p99')} "
            f"| {pair(b.get('proxy_twilio_late'), 'p50_le', 'p99_le')} | {pair(b.get('jitter_buffer_wait'), 'p50_le', 'p99_le')} "
            f"| {fmt(b.get('uring_starved'))}, {fmt(b.get('uring_buffers_held_peak'))} | {worst_second(r.get('timeline'))} |"
        )
    for m in doc.get("medians") or []:
        if "recording_cost_percent" in m:
            lines.append(
                f"\n{m['io']}, {m['calls']:,} calls: median proxy CPU per frame "
                f"{m['plain']['median_cpu_us_per_frame']:.2f} µs without recording ({m['plain']['runs']}), "
                f"{m['recorded']['median_cpu_us_per_frame']:.2f} µs with ({m['recorded']['runs']}): "
                f"{m['recording_cost_percent']:+.1f} %"
            )
    for m in doc.get("io_pairs") or []:
        e, u = m["epoll"], m["uring"]
        ratio = (
            f"median {m['median_ratio']:.2f} ({', '.join(f'{x:.2f}' for x in m['uring_over_epoll'])})"
            if m["pairs"]
            else "no pairs"
        )
        lines.append(
            f"\nio_uring against epoll, {m['calls']:,} calls, {m['pairs']} pair{'' if m['pairs'] == 1 else 's'} of runs back to back: CPU per frame "
            f"io_uring / epoll {ratio}; median CPU per frame epoll {e['median_cpu_us_per_frame']:.2f} µs, "
            f"io_uring {u['median_cpu_us_per_frame']:.2f} µs; median round trip p99 epoll {fmt(e['median_p99_ms'], '{:g}')} ms, "
            f"io_uring {fmt(u['median_p99_ms'], '{:g}')} ms; runs within 5 ms with nothing missing: epoll "
            f"{e['runs_p99_within_5ms']} of {e['runs']}, io_uring {u['runs_p99_within_5ms']} of {u['runs']}"
        )
    return "\n".join(lines) + "\n"


def svg(doc):
    """Two panels against calls: proxy CPU per frame (user, system, total) and round-trip p99."""
    w, h, pad, gap = 760, 330, 60, 40
    pw = (w - 2 * pad - gap) / 2
    ph = h - 2 * pad
    colors = {"epoll": "#1f77b4", "uring": "#d62728"}
    # Without recording only: the curve is the proxy's own cost.
    runs = [r for r in doc["runs"] if not r.get("recording")] or doc["runs"]
    xmax = max(r["calls"] for r in runs) * 1.05 or 1
    panels = [
        ("proxy CPU per bridged frame (µs)", lambda r: r["steady"]["cpu_us_per_frame"], "total"),
        ("round trip p99 (ms)", lambda r: r["round_trip_ms"]["p99"], "p99"),
    ]
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{w / 2}" y="18" text-anchor="middle" font-size="13">voxproxy serve --workers 1, one core, '
        f"{doc['date']} ({doc['machine']['cpu']})</text>",
    ]
    for i, (title, value, _) in enumerate(panels):
        x0 = pad + i * (pw + gap)
        values = [value(r) for r in runs if value(r) is not None]
        user = [r["steady"]["user_us_per_frame"] for r in runs if i == 0 and r["steady"]["user_us_per_frame"]]
        ymax = max(values + user + [1e-9]) * 1.15
        sx = lambda c: x0 + c / xmax * pw
        sy = lambda v: pad + ph - v / ymax * ph
        out.append(f'<rect x="{x0}" y="{pad}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>')
        out.append(f'<text x="{x0 + pw / 2}" y="{pad - 8}" text-anchor="middle">{title}</text>')
        out.append(f'<text x="{x0 + pw / 2}" y="{h - 18}" text-anchor="middle">concurrent calls</text>')
        for k in range(5):
            v = ymax * k / 4
            out.append(f'<text x="{x0 - 5}" y="{sy(v) + 4:.1f}" text-anchor="end">{v:.3g}</text>')
            c = xmax * k / 4
            out.append(f'<text x="{sx(c):.1f}" y="{pad + ph + 14}" text-anchor="middle">{c:.0f}</text>')
        series = [(io, value, colors.get(io, "#333"), "") for io in doc["io"]]
        if i == 0:
            series += [
                (io, lambda r: r["steady"]["user_us_per_frame"], colors.get(io, "#333"), "4 3") for io in doc["io"]
            ]
        for io, get, color, dash in series:
            pts = [(sx(r["calls"]), sy(get(r))) for r in runs if r["io"] == io and get(r) is not None]
            if not pts:
                continue
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
            out.append(
                f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/>'
            )
            out += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>' for x, y in pts]
        legend = [f"{io}" for io in doc["io"]] + ([f"{io} user only (dashed)" for io in doc["io"]] if i == 0 else [])
        for k, label in enumerate(legend):
            color = colors.get(label.split()[0], "#333")
            out.append(f'<text x="{x0 + 8}" y="{pad + 16 + 14 * k}" fill="{color}">{label}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def smoke_check(doc):
    problems = []
    for r in doc["runs"]:
        if r["calls_completed"] != r["calls"]:
            problems.append(f"{r['io']}: {r['calls_completed']} of {r['calls']} calls completed ({r['failures']})")
        if r["frames_returned"] == 0:
            problems.append(f"{r['io']}: no frame came back")
        if r["steady"]["cpu_us_per_frame"] is None or r["rss_kib_per_call"] is None:
            problems.append(f"{r['io']}: the proxy's cost was not measured")
        breakdown = r.get("latency_breakdown_ms") or {}
        if breakdown.get("sim_send_late", {}).get("p50") is None or breakdown.get("proxy_twilio_late") is None:
            problems.append(f"{r['io']}: the round trip's breakdown was not measured ({breakdown})")
        if r["open_fds_settled"] != r["open_fds_before"]:
            problems.append(f"{r['io']}: open files {r['open_fds_before']} before, {r['open_fds_settled']} after")
    return problems


def main():
    args = parse_args()
    if not os.access(args.bin, os.X_OK):
        sys.exit(f"capacity: {args.bin} is not an executable; build it or pass --bin")
    date = datetime.datetime.now(datetime.timezone.utc)
    out_dir = args.out or os.path.join("target", "capacity", date.strftime("%Y%m%dT%H%M%SZ"))
    os.makedirs(out_dir, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    doc = {
        "date": date.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "commit": commit or "unknown",
        "command": "benches/capacity.sh " + " ".join(sys.argv[1:]),
        "io": args.io,
        "proxy_cpu": args.proxy_cpu,
        "rig_cpu": args.rig_cpu,
        "wakeup_oversleep_us": wakeup_oversleep((args.proxy_cpu, args.rig_cpu), 0.5 if args.smoke else 5.0),
        "runs": [],
    }
    # The backends, and without and with recording, alternate run by run,
    # so a change in the machine's speed between runs weighs on both alike:
    # on a shared VM it drifts by more than the differences compared.
    modes = [False, True] if args.record else [False]
    for calls in args.calls:
        for attempt in range(1, args.repeat + 1):
            for io in args.io:
                for record in modes:
                    label = f"{io}, {calls} calls" + (", recorded" if record else "") + f", run {attempt}"
                    print(f"capacity: {label}, {args.seconds} s after the ramp ...", file=sys.stderr, flush=True)
                    run = one_run(args, io, calls, out_dir, record, attempt)
                    doc["runs"].append(run)
                    st = run["steady"]
                    print(
                        f"capacity: {label}: missing {run['frames_missing']}, p99 {run['round_trip_ms']['p99']} ms, "
                        f"CPU {st['cpu_us_per_frame']} µs/frame (user {st['user_us_per_frame']}, system "
                        f"{st['system_us_per_frame']}), {run['rss_kib_per_call']} KiB/call, "
                        f"load {run['load_average_after'][0]}, recording {run['recording']}; "
                        f"rig {run['rig']['cores']} cores ({run['rig']['steady_cores']} steady), "
                        f"{run['rig']['cpu_us_per_frame']} µs/frame "
                        f"(sim {run['rig']['sim_us_per_frame']} + echo {run['rig']['echo_us_per_frame']}); "
                        f"seconds with p99 over 5 ms, worst: {worst_second(run['timeline'])}; "
                        f"steady window's steal (ms by CPU): {run['steady_steal_ms']}",
                        file=sys.stderr,
                        flush=True,
                    )
                    with open(os.path.join(out_dir, "capacity.json"), "w") as f:
                        json.dump(doc, f, indent=2)
    doc["medians"] = medians(doc["runs"])
    doc["io_pairs"] = io_pairs(doc["runs"])
    with open(os.path.join(out_dir, "capacity.json"), "w") as f:
        json.dump(doc, f, indent=2)
    with open(os.path.join(out_dir, "capacity.svg"), "w") as f:
        f.write(svg(doc))
    table = markdown(doc)
    with open(os.path.join(out_dir, "capacity.md"), "w") as f:
        f.write(table)
    print(table)
    print(f"capacity: capacity.json, capacity.svg and capacity.md in {out_dir}", file=sys.stderr)
    soaks = [r for r in doc["runs"] if "soak" in r]
    for r in soaks:
        v = r["soak"]
        print(
            f"capacity: soak {r['io']} {r['calls']} calls: {'passed' if v['passed'] else 'FAILED'}; "
            f"RSS {v.get('rss_kib_at_minute_2')} KiB at minute 2, {v.get('rss_kib_min')}-{v.get('rss_kib_max')} KiB "
            f"after ({v.get('rss_drift_percent')} %), open files {r['open_fds_before']} before / "
            f"{r['open_fds_settled']} settled, missing {r['frames_missing']}"
            + ("; " + "; ".join(v["problems"]) if v["problems"] else ""),
            file=sys.stderr,
        )
    if any(not r["soak"]["passed"] for r in soaks):
        sys.exit("capacity: soak failed")
    if args.smoke:
        problems = smoke_check(doc)
        if problems:
            sys.exit("capacity smoke run failed: " + "; ".join(problems))


if __name__ == "__main__":
    main()
