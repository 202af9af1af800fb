#!/usr/bin/env bash
# MNIST CNN robustness matrix (issue 2, last acceptance bullet).
#
# 25 clients, 5 Byzantine, label-sorted split with gamma=0.5 (half of MNIST dealt IID, half
# sorted by label), distributed SGD with client momentum 0.9, 200 rounds. Defences: Krum,
# coordinate-wise median, geometric median and centered clipping (tau=1), each with and without
# bucketing (s=2), plus plain mean as the undefended reference. Attacks: none (the 5 Byzantine
# clients behave honestly: clean accuracy of each defence), ALIE, IPM, sign flip, label flip.
#
# Usage:   benchmarks/mnist_matrix.sh [OUT_DIR] [extra fortis matrix options...]
# Env:     MNIST_DIR  folder of the MNIST IDX files (default: ../shared/data/mnist relative to
#                     the repository root)
# Output:  OUT_DIR/matrix.{md,json,png} and OUT_DIR/cells/ (default OUT_DIR: fortis-out/mnist-matrix).
# Completed cells are resumed: rerunning after an interruption only computes the missing ones.
# Takes about 45-60 minutes on 2 shared CPU cores (45 cells of about 1 minute each).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MNIST_DIR="${MNIST_DIR:-$REPO/../shared/data/mnist}"
OUT="${1:-$REPO/fortis-out/mnist-matrix}"
shift || true

exec fortis matrix \
  --dataset mnist --data-dir "$MNIST_DIR" \
  --model cnn --training dsgd --momentum 0.9 --lr 0.2 --batch-size 32 \
  --partitions label_sorted --gamma 0.5 \
  --clients 25 --f 5 \
  --rounds 200 --eval-every 20 --seed 0 \
  --attacks none,alie,ipm,sign_flip,label_flip \
  --defences mean,krum,bucketing:s=2+krum,median,bucketing:s=2+median,geometric_median,bucketing:s=2+geometric_median,centered_clipping:tau=1,bucketing:s=2+centered_clipping:tau=1 \
  --out "$OUT" "$@"
