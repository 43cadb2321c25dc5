#!/usr/bin/env bash
# The capacity method of issue 13 (docs/ARCHITECTURE.md, "Measuring
# capacity"): `voxproxy serve --workers 1` alone on CPU 1, `voxproxy echo`
# and `voxproxy sim --workers 1` on CPU 0, N calls overlapping for S seconds
# after the ramp, for each N of a list. Writes capacity.json, capacity.svg and
# capacity.md (a table for README) into the output directory.
#
#   benches/capacity.sh                                  # release build, 50,200,600,1000 calls x 20 s, epoll
#   benches/capacity.sh --calls 200,1000 --seconds 20 --io epoll,uring
#   benches/capacity.sh --smoke --bin target/debug/voxproxy   # 20 calls x 3 s, checks the rig works (.ci/run)
#   benches/capacity.sh --calls 500 --seconds 15 --record --repeat 3   # recording's cost: medians, with vs without
#   benches/capacity.sh --calls 500 --seconds 1800 --soak              # the soak: memory flat, files back, 0 missing
#
# Every option is passed to benches/capacity.py (`--help` lists them). Unless
# --bin is given, it builds the release binary first.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ " $* " != *" --bin "* && " $* " != *" --help "* && " $* " != *" -h "* ]]; then
    export CARGO_INCREMENTAL=0
    cargo build --release --locked -p voxproxy
fi
# Three descriptors per call in the proxy, two in the simulator: raise the
# soft limit as far as the hard one allows.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec python3 benches/capacity.py "$@"
