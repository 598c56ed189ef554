#!/usr/bin/env bash
# The GPU checks a session lent a CUDA machine runs, as few long commands (device time is scarce).
#
#   bash benchmarks/gpu_checks.sh engine   RESULTS                 # CUDA tests, training speed (random images)
#   bash benchmarks/gpu_checks.sh accuracy RESULTS DATA [SECONDS]  # seed, cpu and best recipes on the real data
#   bash benchmarks/gpu_checks.sh ship     RESULTS DATA [SECONDS [WILD]]  # the `accurate` models, to bring back
#
# ship (issue 18) trains the `accurate` recipe with 4 and 7 classes side by side on the one GPU (within
# SECONDS less 150, default 540), writes the 4-class model's teacher file (`ferkit teach`) and trains the
# `fast` recipe distilled from it (`--teacher`, half of each target), scores the three with
# benchmarks/wild.py on PublicTest and WILD (a face folder as benchmarks/faces48.py writes it: the
# 28 MB muxspace-dev is 3.5 MB so, and scores the same), then leaves in RESULTS what must come
# back (8 files, 64 MiB at most): the accurate models' fp16 weights in parts of 15 MiB
# (`NAME_fp16.pt.partNN`), SHA256SUMS of the whole files, and ship.tar.gz with every run's log, config,
# history and reports, the scores and the teacher file. fast_kd's weights stay there (three models
# exceed 64 MiB): it is a preview, and `fast` is trained on CPUs, from the teacher file. Here: `cat
# NAME.part* > NAME`, `sha256sum -c SHA256SUMS`. FERKIT_DEVICE (default cuda) and FERKIT_TRAIN_FLAGS
# (e.g. "--epochs 1") let the stage be tried on a CPU with a tiny file before device time is spent on it.
# The two calls, after the data steps of shared/device/README.md and untracking the weights (below):
#   here:   python benchmarks/faces48.py ../shared/wild/muxspace-dev .fer2/wild48
#   call 1: carry [".fer1"], `ls -la .fer1; nvidia-smi`
#   call 2: carry [".fer2"], timeout_s 600, `python3 .fer2/join.py /tmp/fer2013.npz .fer1/fer2013.part1.npz.xz
#           .fer2/fer2013.part2.npz.xz && bash benchmarks/gpu_checks.sh ship $OUT /tmp/fer2013.npz 520 .fer2/wild48`
#
# Runs from the repository root with the machine's own PyTorch (no install: PYTHONPATH=src). Each step
# has its own time limit and logs to a scratch folder, which is packed into RESULTS/<stage>.tar.gz
# after every step, so a failure or a timeout loses that step alone. SECONDS (default 540) bounds the
# accuracy stage: the last recipe gets whatever time is left. Checkpoints stay behind (too large).
#
# Getting the data there (shared/device/README.md: two calls, one half each): the tree with the
# bundled weights (about 39 MB) and one 31 MB half exceed a call's 64 MiB, so for those two calls
# untrack the files in src/ferkit/weights/*.pt and *.onnx (`git rm --cached` them and name them in
# .git/info/exclude), then `git reset` them and drop the exclude lines. The engine stage needs no
# data: run it as the first call, carrying the first half, and the accuracy stage as the second.
set -u
stage=$1 results=$2 data=${3:-} budget=${4:-540} wild=${5:-}
work=/tmp/gpu_checks/$stage
mkdir -p "$work" "$results"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1

step() {  # step NAME LIMIT_SECONDS COMMAND...
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    echo "== $name (limit ${limit}s): $*"
    timeout "$limit" "$@" >"$work/$name.log" 2>&1
    echo "== $name: exit $? after $((SECONDS - start))s"
    grep -v "it/s" "$work/$name.log" | tail -n 8
    pack
}

pack() {  # everything but weights, into RESULTS
    tar -czf "$results/$stage.tar.gz" -C "$work" --exclude="*.pth" --exclude="*.pt" .
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')"

case $stage in
engine)
    step tests 200 python3 -m pytest -q -p no:cacheprovider tests/train/test_cuda.py
    for recipe in seed cpu best; do
        step "speed_$recipe" 150 python3 benchmarks/train_speed.py --device cuda --recipe "$recipe" --steps 200 \
            --json "$work/speed_$recipe.json"
    done
    step speed_seed_8workers 150 python3 benchmarks/train_speed.py --device cuda --recipe seed --steps 200 \
        --workers 8 --json "$work/speed_seed_8workers.json"
    ;;
accuracy)
    for recipe in seed cpu best; do
        left=$((budget - SECONDS - 15))
        [ "$left" -gt 30 ] || { echo "== $recipe: no time left"; continue; }
        step "$recipe" "$left" python3 benchmarks/accuracy.py --recipe "$recipe" --classes 4 --device cuda \
            --data "$data" --reports "$work/reports"
    done
    ;;
ship)
    device=${FERKIT_DEVICE:-cuda} limit=$((budget - 150))
    train() {  # train NAME FLAGS...: ferkit train within the limit, into $work/NAME, its log beside it
        local name=$1 start=$SECONDS
        shift
        echo "== $name: ferkit train $* (limit ${limit}s)"
        # shellcheck disable=SC2086
        timeout "$limit" python3 -m ferkit train --device "$device" --data "$data" --out "$work/$name" "$@" \
            ${FERKIT_TRAIN_FLAGS:-} >"$work/$name.log" 2>&1
        echo "== $name: exit $? after $((SECONDS - start))s"
        grep "best epoch" "$work/$name.log"
    }
    # side by side: each process leaves the GPU idle while its host launches the next kernels
    train accurate --recipe accurate --classes 4 &
    train accurate7 --recipe accurate --classes 7 &
    wait
    pack
    if [ -f "$work/accurate/fer_resnet18_best.pth" ]; then
        step teach 120 python3 -m ferkit teach "$work/accurate/fer_resnet18_best.pth" --data "$data" \
            --out "$work/teacher_accurate.npz" --device "$device"
        limit=$((budget - SECONDS - 120))  # what wild.py and the exports need is kept back
        [ "$limit" -gt 60 ] && train fast_kd --recipe fast --teacher "$work/teacher_accurate.npz" --teacher-weight 0.5
    fi
    runs=$(for name in accurate accurate7 fast_kd; do ls "$work/$name/fer_resnet18_best.pth" 2>/dev/null; done)
    # shellcheck disable=SC2086
    [ -n "$wild" ] && [ -n "$runs" ] && step wild 90 python3 benchmarks/wild.py --data "$data" --folder "$wild" \
        --json "$work/wild_PublicTest.json" $runs
    : >"$results/SHA256SUMS"
    for name in accurate accurate7; do
        best=$work/$name/fer_resnet18_best.pth
        [ -f "$best" ] || { echo "== $name: no checkpoint"; continue; }
        step "export_$name" 60 python3 -m ferkit export "$best" --weights "$work/${name}_fp16.pt"
        (cd "$work" && sha256sum "${name}_fp16.pt" >>"$results/SHA256SUMS")
        split -b 15M -d "$work/${name}_fp16.pt" "$results/${name}_fp16.pt.part"
    done
    pack
    ls -l "$results"
    ;;
*)
    echo "unknown stage $stage (engine, accuracy or ship)" >&2
    exit 2
    ;;
esac
