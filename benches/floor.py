#!/usr/bin/env python3
"""The kernel's floor for the traffic of N calls (issue 13).

Two processes, each pinned to one CPU, exchange what a bridged call exchanges:
per call one TCP connection (TCP_NODELAY) carrying a 300-byte message each
way every 20 ms (the Media Streams WebSocket) and one UDP socket pair carrying
a 172-byte datagram each way every 20 ms (RTP: 12-byte header + 160 bytes of
μ-law). Side "proxy" stands for voxproxy, side "peer" for the simulator and
the echo backend together. Each call's sends are spread over the 20 ms as
real calls' are: a 1 ms tick sends for the calls whose phase is due.

What counts is **system** CPU per message on each side (utime and stime from
/proc/PID/stat over the steady window; Python's user time is the price of
writing this in Python and is reported but meaningless): that is what the
kernel charges for moving a message, the floor under any user space.

Modes:
- `syscall`: epoll style, one syscall per message (a `send` or `recv` on the
  call's own socket), `epoll_wait` between ticks, level-triggered, one read
  per readiness so no EAGAIN read is ever paid.
- `batched`: TCP as above (a TCP stream cannot be batched across connections
  without io_uring); UDP through ONE socket per side, `sendmmsg` of every
  datagram due in a tick, `recvmmsg` of up to 64 at a time. This is the floor
  of a shared-socket design (the echo backend's); a per-call-port proxy can
  only batch across sockets with io_uring.

    python3 benches/floor.py                                  # 200,1000,2000 calls x 10 s, both modes
    python3 benches/floor.py --calls 1000 --seconds 5 --mode batched --legs udp

Standard library only (ctypes for sendmmsg/recvmmsg). Linux only.
"""

import argparse
import ctypes
import ctypes.util
import datetime
import json
import os
import platform
import resource
import select
import socket
import sys
import time

TCP_BYTES = 300
UDP_BYTES = 172
FRAME_MS = 20
TICK_MS = 1
MMSG_BATCH = 64
MSG_DONTWAIT = 0x40
CLK_TCK = os.sysconf("SC_CLK_TCK")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", default="200,1000,2000", help="comma-separated numbers of calls, one run each")
    p.add_argument("--seconds", type=float, default=10.0, help="steady window measured, after 2 s of warm-up")
    p.add_argument("--mode", default="syscall,batched", help="comma-separated: syscall, batched")
    p.add_argument("--legs", default="tcp,udp", help="which legs each call has: tcp, udp or both")
    p.add_argument("--proxy-cpu", type=int, default=1)
    p.add_argument("--peer-cpu", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the results to this file")
    a = p.parse_args()
    a.calls = [int(n) for n in a.calls.split(",") if n.strip()]
    a.mode = [m.strip() for m in a.mode.split(",") if m.strip()]
    a.legs = {s.strip() for s in a.legs.split(",") if s.strip()}
    if not a.calls or min(a.calls) < 1 or a.seconds <= 0:
        p.error("--calls needs positive numbers and --seconds a positive value")
    if any(m not in ("syscall", "batched") for m in a.mode) or not a.legs or a.legs - {"tcp", "udp"}:
        p.error("--mode takes syscall and/or batched, --legs tcp and/or udp")
    return a


class Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class Msghdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(Iovec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", Msghdr), ("msg_len", ctypes.c_uint)]


class Mmsg:
    """A reusable array of `count` mmsghdr, each over its own `size`-byte buffer."""

    def __init__(self, count, size):
        self.libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.bufs = (ctypes.c_char * (size * count))()
        self.iovs = (Iovec * count)()
        self.msgs = (Mmsghdr * count)()
        base = ctypes.addressof(self.bufs)
        for i in range(count):
            self.iovs[i].iov_base = base + i * size
            self.iovs[i].iov_len = size
            self.msgs[i].msg_hdr.msg_iov = ctypes.pointer(self.iovs[i])
            self.msgs[i].msg_hdr.msg_iovlen = 1

    def send(self, fd, count):
        """sendmmsg of `count` datagrams; returns how many went (one syscall per 1,024)."""
        sent = 0
        while sent < count:
            n = min(count - sent, len(self.msgs))
            r = self.libc.sendmmsg(fd, self.msgs, n, MSG_DONTWAIT)
            if r <= 0:
                break
            sent += r
        return sent

    def recv(self, fd):
        """recvmmsg of up to the array's length; returns how many arrived."""
        r = self.libc.recvmmsg(fd, self.msgs, len(self.msgs), MSG_DONTWAIT, None)
        return max(r, 0)


def proc_cpu(pid="self"):
    """(user, system) seconds from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def make_pairs(calls, legs, mode):
    """Per call a TCP pair and (syscall mode) a UDP pair; one UDP pair in batched mode."""
    tcp, udp = [], []
    if "tcp" in legs:
        listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
        for _ in range(calls):
            c = socket.create_connection(listener.getsockname())
            s, _ = listener.accept()
            for x in (c, s):
                x.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                x.setblocking(False)
            tcp.append((s, c))
        listener.close()
    if "udp" in legs:
        for _ in range(calls if mode == "syscall" else 1):
            a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            for x in (a, b):
                x.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                x.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
                x.bind(("127.0.0.1", 0))
            a.connect(b.getsockname())
            b.connect(a.getsockname())
            for x in (a, b):
                x.setblocking(False)
            udp.append((a, b))
    return tcp, udp


class Side:
    """One process's half of every call, driven by a 1 ms tick and epoll."""

    def __init__(self, tcp, udp, calls, mode):
        self.tcp, self.udp, self.calls, self.mode = tcp, udp, calls, mode
        self.poll = select.epoll()
        self.kind = {}
        for s in tcp:
            self.poll.register(s.fileno(), select.EPOLLIN)
            self.kind[s.fileno()] = "tcp"
        for s in udp:
            self.poll.register(s.fileno(), select.EPOLLIN)
            self.kind[s.fileno()] = "udp"
        self.tcp_msg = b"t" * TCP_BYTES
        self.udp_msg = b"u" * UDP_BYTES
        self.mmsg = Mmsg(max(MMSG_BATCH, calls), UDP_BYTES) if mode == "batched" and udp else None
        self.sent = self.received = self.tcp_bytes = 0
        self.dropped = 0

    def send_due(self, slot):
        """Sends for the calls whose 20 ms phase is `slot`."""
        per = FRAME_MS // TICK_MS
        due = range(slot, self.calls, per)
        for i in due:
            if self.tcp:
                try:
                    self.tcp[i].send(self.tcp_msg)
                    self.sent += 1
                except OSError:  # full (BlockingIOError), or the other side already left
                    self.dropped += 1
            if self.udp and self.mmsg is None:
                try:
                    self.udp[i].send(self.udp_msg)
                    self.sent += 1
                except OSError:
                    self.dropped += 1
        if self.mmsg is not None and len(due):
            n = self.mmsg.send(self.udp[0].fileno(), len(due))
            self.sent += n
            self.dropped += len(due) - n

    def on_ready(self, fd):
        if self.kind[fd] == "tcp":
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            if not data:  # the other side finished first: stop watching
                self.poll.unregister(fd)
                return
            self.tcp_bytes += len(data)
            whole, self.tcp_bytes = divmod(self.tcp_bytes, TCP_BYTES)
            self.received += whole
        elif self.mmsg is not None:
            while True:
                n = self.mmsg.recv(fd)
                self.received += n
                if n < len(self.mmsg.msgs):
                    break
        else:
            try:
                os.read(fd, 2048)
                self.received += 1
            except OSError:
                pass

    def run(self, start, warm, seconds):
        """Runs until start + warm + seconds; returns counts and CPU of the steady window."""
        tick = TICK_MS / 1000
        n = 0
        mark = None
        end = start + warm + seconds
        while True:
            now = time.monotonic()
            if mark is None and now >= start + warm:
                mark = (now, proc_cpu(), self.sent, self.received, self.dropped)
            if now >= end:
                break
            due = start + n * tick
            if now >= due:
                self.send_due(n % (FRAME_MS // TICK_MS))
                n += 1
                continue
            for fd, _ in self.poll.poll(due - now):
                self.on_ready(fd)
        wall = time.monotonic() - mark[0]
        user, system = proc_cpu()
        return {
            "wall": wall,
            "user": user - mark[1][0],
            "system": system - mark[1][1],
            "sent": self.sent - mark[2],
            "received": self.received - mark[3],
            "dropped": self.dropped - mark[4],
            "ticks_behind": max(0, int((end - start) / tick) - n),
            "ticks": n,
        }


def child(cpu, side, start, warm, seconds, wfd):
    os.sched_setaffinity(0, {cpu})
    result = side().run(start, warm, seconds)
    os.write(wfd, json.dumps(result).encode())
    os._exit(0)


def one_run(calls, mode, legs, args):
    need = calls * 4 + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))
    tcp, udp = make_pairs(calls, legs, mode)
    warm = 2.0
    start = time.monotonic() + 0.5
    pids, pipes = {}, {}
    for name, cpu, pick in (("proxy", args.proxy_cpu, 0), ("peer", args.peer_cpu, 1)):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            mine_t = [p[pick] for p in tcp]
            mine_u = [p[pick] for p in udp]
            for p in tcp + udp:
                p[1 - pick].close()
            child(cpu, lambda: Side(mine_t, mine_u, calls, mode), start, warm, args.seconds, w)
        os.close(w)
        pids[name], pipes[name] = pid, r
    for p in tcp + udp:
        for s in p:
            s.close()
    out = {"calls": calls, "mode": mode, "legs": sorted(legs)}
    for name, pid in pids.items():
        chunks = []
        while True:
            b = os.read(pipes[name], 65536)
            if not b:
                break
            chunks.append(b)
        os.close(pipes[name])
        os.waitpid(pid, 0)
        r = json.loads(b"".join(chunks))
        msgs = r["sent"] + r["received"]
        offered = calls * len(legs) * 2 * (1000 / FRAME_MS) * r["wall"]
        r["messages"] = msgs
        r["offered"] = round(offered)
        r["sys_us_per_msg"] = round(r["system"] / max(msgs, 1) * 1e6, 2)
        r["user_us_per_msg"] = round(r["user"] / max(msgs, 1) * 1e6, 2)
        r["cores"] = round((r["user"] + r["system"]) / r["wall"], 2)
        r["sys_cores"] = round(r["system"] / r["wall"], 2)
        out[name] = r
    return out


def machine():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs, Linux {platform.release()}"


def main():
    args = parse_args()
    print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {machine()}")
    print(f"# load average before: {os.getloadavg()[0]:.2f}; legs {','.join(sorted(args.legs))}")
    print(
        "| mode | calls | side | messages (of offered) | system µs per message | "
        "system cores | (python user cores) | sends dropped |"
    )
    print("| --- | ---: | --- | --- | ---: | ---: | ---: | ---: |")
    results = []
    for mode in args.mode:
        for calls in args.calls:
            r = one_run(calls, mode, args.legs, args)
            results.append(r)
            for name in ("proxy", "peer"):
                s = r[name]
                print(
                    f"| {mode} | {calls:,} | {name} | {s['messages']:,} ({s['offered']:,}) | "
                    f"{s['sys_us_per_msg']:.2f} | {s['sys_cores']:.2f} | "
                    f"{s['user'] / s['wall']:.2f} | {s['dropped']:,} |",
                    flush=True,
                )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
