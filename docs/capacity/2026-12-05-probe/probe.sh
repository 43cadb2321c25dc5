#!/bin/bash
# How the files beside this one were made (2026-12-05 14:10-14:13 UTC, with
# BIN a release build of 2154e30): four epoll runs at 1,000 calls; in each,
# `perf stat` counts the proxy's system calls over 8 s of the steady window
# (the ramp takes 10 s), and `nstat` the machine's TCP counters over the run.
#   docs/capacity/2026-12-05-probe/probe.sh BIN OUT_DIR
set -eu
bin=$1 out=$2
mkdir -p "$out"
cd "$(dirname "$0")/../../.."
for i in 1 2 3 4; do
    nstat -n >/dev/null 2>&1
    benches/capacity.sh --calls 1000 --seconds 15 --io epoll --bin "$bin" --out "$out/r$i" >"$out/r$i.log" 2>&1 &
    cap=$!
    sleep 16
    pid=$(pgrep -f "$bin serve" | head -1)
    events=$(printf 'syscalls:sys_enter_%s,' sendto recvfrom recvmmsg epoll_wait writev write read futex sendmsg recvmsg)
    perf stat -e "${events%,}" -p "$pid" -- sleep 8 >"$out/r$i.perf" 2>&1
    wait $cap
    nstat >"$out/r$i.nstat" 2>&1
done
