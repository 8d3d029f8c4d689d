#!/usr/bin/env bash
# One short session on a lent GPU box: measure generation speed there and train the bundled preset from a pack.
#
#   here (CPU):  nsynth dataset soundfont /usr/share/sounds/sf2/FluidR3_GM.sf2 -o data/fluid --programs 0-111 \
#                    --pitches 24-96 --velocities 75,127        # Debian's fluid-soundfont-gm; 15,938 notes, ~25 s
#                nsynth dataset pack data/fluid -o out/fluid.nspack --velocities 127 --pitches 24-96:4
#   GPU box:     bash scripts/gpu_session.sh out/fluid.nspack [TRAIN_MINUTES]
#   here again:  python bench/quality.py --model OUT/run
#
# Needs only python3 with torch, numpy, matplotlib and tqdm on the GPU box (no install, no network): the repo runs
# from its folder. Writes into $OUT (default out/gpu): gpu.txt, generate.log, train.log and the run folder run/
# (config.json, model.pt, train_state.pt, loss.png). Each step runs even if the one before it failed.
set -uo pipefail
cd "$(dirname "$0")/.."
pack=${1:?usage: scripts/gpu_session.sh PACK [TRAIN_MINUTES]}
minutes=${2:-5}
out=${OUT:-out/gpu}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'; } | tee "$out/gpu.txt"
# Generation speed: the CPU row at batch 64, then the paper-size model on the GPU (bf16, CUDA graphs, auto batch).
timeout 300 python3 bench/generate.py --batches 64 --rounds 3 2>&1 | tee "$out/generate.log"
# Training: a new run of the bundled recipe (harmonic source with noise bands, a residual decoder trained on the
# crops' analysed source), batch and crop as the paper, the schedule fitted to the budget.
python3 -m nsynth.cli train "$pack" --run "$out/run" --preset compact --batch 64 --crop 6144 --lr 1e-3 \
    --source-residual --source-noise 32 --source-teacher --input-noise 0.1 --minutes "$minutes" \
    --checkpoint-every 1000 2>&1 | tee "$out/train.log"
