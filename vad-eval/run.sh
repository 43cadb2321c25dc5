#!/usr/bin/env bash
# The whole evaluation: build both sets, build voxproxy, score both VADs on
# the test set and rewrite RESULTS.md. With --retrain, also refit the model
# on the tuning set first (rewrites core/src/vad/model.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
python3 vad-eval/dataset.py --set all
if [ "${1:-}" = "--retrain" ]; then
  cargo build --release -p voxproxy-core --example vad_features
  python3 vad-eval/train.py --example "$target/release/examples/vad_features"
fi
cargo build --release -p voxproxy
python3 vad-eval/evaluate.py --voxproxy "$target/release/voxproxy"
