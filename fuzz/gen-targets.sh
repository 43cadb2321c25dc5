#!/usr/bin/env bash
# Regenerates fuzz_targets/*.rs and the [[bin]] entries of Cargo.toml from the
# entry points registered in ../src/fuzz/mod.rs (TARGETS). Run after adding one.
set -euo pipefail
cd "$(dirname "$0")"
names=$(sed -n "/^pub const TARGETS/,/^];/p" ../src/fuzz/mod.rs | grep -oE "\(\"[a-z0-9_]+\"" | tr -d "(\"")
sed -i '/^\[\[bin\]\]/,$d' Cargo.toml
mkdir -p fuzz_targets && rm -f fuzz_targets/*.rs
for n in $names; do
  cat > "fuzz_targets/$n.rs" <<RS
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| voxproxy_suite::fuzz::$n(data));
RS
  printf '[[bin]]\nname = "%s"\npath = "fuzz_targets/%s.rs"\ntest = false\ndoc = false\nbench = false\n\n' "$n" "$n" >> Cargo.toml
done
sed -i -e :a -e '/^\n*$/{$d;N;ba' -e '}' Cargo.toml
echo "$names"
