#!/usr/bin/env bash
# User-space instructions per bridged frame of `voxproxy serve`, counted by
# valgrind's callgrind rather than timed: on a shared, loaded machine CPU
# time moves by tens of percent between runs, instruction counts by well
# under one. `serve --workers 1 --io epoll` runs under callgrind on CPU 1,
# `voxproxy echo` and `voxproxy sim` on CPU 0; the counts are zeroed 5 s
# into the calls and dumped 8 s later, so set-up and tear-down stay out.
#
#   benches/callgrind.sh target/release/voxproxy [CALLS] [OUT_DIR]
#
# Prints the instructions of the window and, with every frame bridged
# (CALLS x 50 frames a second each way), the instructions per frame.
set -euo pipefail
bin=${1:?usage: benches/callgrind.sh BIN [CALLS] [OUT_DIR]}
calls=${2:-10}
out=${3:-$(mktemp -d)}
mkdir -p "$out"
free_port() {
    python3 -c "import socket,sys; s=socket.socket(socket.AF_INET, getattr(socket, sys.argv[1])); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])" "$1"
}
port=$(free_port SOCK_STREAM)
echo_port=$(free_port SOCK_DGRAM)
base="http://127.0.0.1:$port"
export TWILIO_AUTH_TOKEN=callgrind VOXPROXY_LIMITS_WEBHOOK_RATE_PER_IP=0 VOXPROXY_VAD_BARGE_IN=false
export VOXPROXY_CDR_PATH="$out/cdr.jsonl"
taskset -c 0 "$bin" echo --listen "127.0.0.1:$echo_port" >"$out/echo.log" 2>&1 &
echo_pid=$!
taskset -c 1 valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out" "$bin" serve --workers 1 \
    --io epoll --listen "127.0.0.1:$port" --public-url "$base" --backend "127.0.0.1:$echo_port" \
    --rtp-ports 30000-30999 >"$out/serve.log" 2>&1 &
serve_pid=$!
trap 'kill $serve_pid $echo_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 240); do
    curl -sf "$base/healthz" >/dev/null 2>&1 && break
    sleep 0.5
done
sleep 1
taskset -c 0 "$bin" sim --url "$base" --calls "$calls" --seconds 14 --ramp 20 --workers 1 \
    --json "$out/sim.json" >"$out/sim.log" 2>&1 &
sim_pid=$!
sleep 5
callgrind_control -z "$serve_pid" >/dev/null 2>&1
sleep 8
callgrind_control -d "$serve_pid" >/dev/null 2>&1
wait "$sim_pid"
window=$(sed -n 's/^summary: //p' "$out"/callgrind.out.* | head -1)
frames=$((calls * 100 * 8))
python3 - "$out/sim.json" "$window" "$frames" <<'PY'
import json, sys
report, window, frames = json.load(open(sys.argv[1])), int(sys.argv[2]), int(sys.argv[3])
print(f"frames (whole run): {report['frames']}")
print(f"instructions in the 8 s window: {window:,}; per bridged frame: {window / frames:,.0f}"
      + ("" if report["frames"]["missing"] == 0 else " (frames were missing: not every frame was bridged)"))
PY
