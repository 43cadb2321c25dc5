#!/usr/bin/env bash
# Runs cargo-fuzz targets for SECONDS each (default 300), JOBS at a time
# (default 1), on a scratch copy of each committed seed corpus, and prints
# one line per target: runs executed, coverage, and whether it found
# anything. Needs nightly and cargo-fuzz (`cargo install cargo-fuzz`).
#   fuzz/run-all.sh [SECONDS] [JOBS] [TARGET...]
set -uo pipefail
cd "$(dirname "$0")"
secs=${1:-300}; jobs=${2:-1}; shift 2 2>/dev/null || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
cargo +nightly fuzz build -O >/dev/null 2>&1 || { echo "cargo fuzz build failed"; exit 1; }
mkdir -p corpus-run logs
run_one() {
  t=$1
  rm -rf "corpus-run/$t"; cp -r "corpus/$t" "corpus-run/$t"
  start=$(date +%s)
  cargo +nightly fuzz run -O "$t" "corpus-run/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 \
    > "logs/$t.log" 2>&1
  rc=$?
  end=$(date +%s)
  last=$(grep -E '^#[0-9]+' "logs/$t.log" | tail -1 | awk '{print $1, $2, $3, $4}')
  if [ $rc -eq 0 ]; then verdict="no finding"; else verdict="FINDING (exit $rc, see fuzz/logs/$t.log)"; fi
  echo "$t: $((end - start)) s, $last, $verdict"
}
export -f run_one; export secs
printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c 'run_one {}'
