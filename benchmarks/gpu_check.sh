#!/usr/bin/env bash
# The checks that need a GPU, in one script (about 9 minutes on one H200 with 16 cores):
#   (a) benchmarks/throughput.py --device cuda, for the default preset (8 envs) and for 32 envs;
#   (b) 2 ranks with torchrun for 3 iterations, stopped, then resumed for 3 more with the bit-exact
#       parameter check after every iteration (--sync_check_interval 1 raises on any difference):
#       NCCL where there is a GPU per rank; gloo over the GPU's tensors where the 2 ranks share one
#       GPU, as ppo1 does then (NCCL refuses two ranks on one device);
#   (c) `ppo1 train --device cuda` on Pong for 5 minutes (stopped by Ctrl-C, as a user would), and
#       its steps/s.
# Every check runs the default preset, whatever it is; run folders are found, not named.
# Run from the repository root with the project installed: bash benchmarks/gpu_check.sh
# A dry run of the script itself on a CPU (tests/test_gpu_check.py):
#   DEVICE=cpu PONG_SECONDS=300 PHASE_SECONDS=1 LOOP_SECONDS=4 NUM_ENVS=2 HORIZON=32 \
#   PONG_FLAGS="--num_envs 2 --timesteps_per_actorbatch 32 --env_steps 128" bash benchmarks/gpu_check.sh
# Results: JSON files under $OUT (default gpu-check/), summary.json beside them. Exits non-zero
# if a check fails; the checks after it still run.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-check}"
DEVICE="${DEVICE:-cuda}"
PONG_SECONDS="${PONG_SECONDS:-300}"
PHASE_SECONDS="${PHASE_SECONDS:-5}"
NUM_ENVS="${NUM_ENVS:-8}"  # envs per process in (a) and (b); (a) also runs 4x as many
HORIZON="${HORIZON:-128}"  # steps per env per iteration in (b)
LOOP_SECONDS="${LOOP_SECONDS:-}"  # seconds of throughput.py's real loop (default: its own)
PONG_FLAGS="${PONG_FLAGS:-}"  # flags added to (c); none on a GPU (the dry run shrinks its iterations)
LOOP=(${LOOP_SECONDS:+--loop_seconds "$LOOP_SECONDS"})
mkdir -p "$OUT"
WORK="$(mktemp -d)"
status=0
note() { echo "== $*" | tee -a "$OUT/log.txt"; }

note "$(python -c 'import torch; print(torch.cuda.device_count(), "GPUs", torch.cuda.is_available() and torch.cuda.get_device_name() or "", "torch", torch.__version__)')"
if [ "$DEVICE" = cuda ] && ! python -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
  note "no CUDA device: nothing to check"
  exit 1
fi

# (a) throughput on the GPU
note "(a) throughput, the default preset, $NUM_ENVS envs"
python benchmarks/throughput.py --device "$DEVICE" --num_envs "$NUM_ENVS" --timesteps_per_actorbatch "$HORIZON" \
  --seconds "$PHASE_SECONDS" "${LOOP[@]}" --json "$OUT/throughput-default.json" 2>&1 | tee -a "$OUT/log.txt" || status=1
note "(a) throughput, the default preset, $((4 * NUM_ENVS)) envs"
python benchmarks/throughput.py --device "$DEVICE" --num_envs "$((4 * NUM_ENVS))" --timesteps_per_actorbatch "$HORIZON" \
  --seconds "$((2 * PHASE_SECONDS))" "${LOOP[@]}" --json "$OUT/throughput-4x-envs.json" 2>&1 | tee -a "$OUT/log.txt" || status=1

# (b) 2 ranks: start, stop, resume, bit-exact check after every iteration
note "(b) torchrun, 2 ranks, 3 iterations then resumed for 3 more"
FLAGS=(--device "$DEVICE" --num_envs "$NUM_ENVS" --timesteps_per_actorbatch "$HORIZON" --checkpoint_dir "$WORK/dist"
  --sync_check_interval 1 --save_interval 1)
PER_ITER=$((2 * NUM_ENVS * HORIZON))
dist_ok=1
for steps in $((3 * PER_ITER)) $((6 * PER_ITER)); do
  python -m torch.distributed.run --nproc-per-node 2 --master-port 29533 -m ppo1 train "${FLAGS[@]}" \
    --env_steps "$steps" > "$WORK/dist-$steps.txt" 2>&1 || dist_ok=0
  tail -n 3 "$WORK/dist-$steps.txt" | tee -a "$OUT/log.txt"
done
grep -h "^resuming" "$WORK"/dist-*.txt | tee -a "$OUT/log.txt"
grep -q "^resuming .* at step $((3 * PER_ITER))" "$WORK/dist-$((6 * PER_ITER)).txt" || dist_ok=0
DIST_RUN="$(ls -d "$WORK"/dist/*/ 2>/dev/null | head -n 1)"  # <Game>-<the default preset>
python - "${DIST_RUN}checkpoint.pt" "$OUT/distributed.json" "$dist_ok" "$DEVICE" <<'EOF' || status=1
import json, sys, torch
ckpt = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
cuda = sys.argv[4] == "cuda"
ranks = ckpt["rng"]["ranks"]
ok = sys.argv[3] == "1" and ckpt["counters"]["iterations"] == 6 and len(ranks) == 2
ok = ok and all((r.get("cuda") is not None) == cuda for r in ranks)  # each rank's CUDA generator saved
result = {
    "backend": "nccl" if cuda and torch.cuda.device_count() >= 2 else "gloo",
    "iterations": ckpt["counters"]["iterations"],
    "world_size": ckpt["world_size"],
    "cuda_rng_saved_per_rank": [r.get("cuda") is not None for r in ckpt["rng"]["ranks"]],
    "passed": ok,
}
json.dump(result, open(sys.argv[2], "w"), indent=2)
print(result)
sys.exit(0 if ok else 1)
EOF

# (c) 5 minutes of Pong on the GPU
note "(c) ppo1 train --device $DEVICE, Pong, $PONG_SECONDS s"
timeout -s INT "$PONG_SECONDS" ppo1 train --device "$DEVICE" --checkpoint_dir "$WORK/pong" $PONG_FLAGS > "$WORK/pong.txt" 2>&1
tail -n 2 "$WORK/pong.txt" | tee -a "$OUT/log.txt"
PONG_RUN="$(ls -d "$WORK"/pong/*/ 2>/dev/null | head -n 1)"
python - "${PONG_RUN}progress.csv" "$OUT/pong-5min.json" <<'EOF' || status=1
import csv, json, os, sys
rows = list(csv.DictReader(open(sys.argv[1]))) if os.path.exists(sys.argv[1]) else []
if not rows:
    sys.exit("Pong: no iteration finished in the time given")
last = rows[-1]
result = {k: float(last[k]) for k in ("TimestepsSoFar", "TimeElapsed", "StepsPerSecond", "EpRewMean")}
result["time_split"] = {k: sum(float(r[k]) for r in rows[1:]) for k in ("TimeEnv", "TimeInference", "TimeUpdate")}
json.dump(result, open(sys.argv[2], "w"), indent=2)
print(f"Pong on the GPU: {result['StepsPerSecond']:.0f} steps/s, {result['TimestepsSoFar']:.0f} steps in "
      f"{result['TimeElapsed']:.0f} s; time in env / inference / update: {result['time_split']}")
EOF

python - "$OUT" "$status" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
summary = {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json")) if p.stem != "summary"}
for k in ("throughput-default", "throughput-4x-envs"):
    if k in summary:  # the settings and versions are in the files themselves
        summary[k] = {f: summary[k][f] for f in ("env_sps", "inference_sps", "update_sps", "bare_network_sps",
                                                  "update_vs_bare_network", "serial_bound_sps", "train_sps",
                                                  "train_vs_bound", "phase_seconds", "peak_rss_mb")}
summary["all_passed"] = sys.argv[2] == "0"
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
EOF
rm -rf "$WORK"
exit $status
