#!/usr/bin/env bash
# Tiny training runs whose weights must not change when code moves: run it before and after a refactor
# (bash benchmarks/same_weights.sh /tmp/before; ...; bash benchmarks/same_weights.sh /tmp/after) and compare
# the two hashes.txt. Synthetic data (tests/conftest.py), so no dataset is needed; about 9 minutes on 2 cores.
set -e
cd "$(dirname "$0")/.."
OUT=$1; mkdir -p $OUT
python -c "
import sys; sys.path.insert(0, 'tests')
from conftest import synthetic_rows, write_csv
from pathlib import Path
write_csv(Path('$OUT/tiny.csv'), synthetic_rows({'Training': 600, 'PublicTest': 64, 'PrivateTest': 64}))
"
export FERKIT_CACHE_DIR=$OUT/cache
ferkit train --recipe cpu --epochs 2 --data $OUT/tiny.csv --out $OUT/cpu --photometric 0.25 --erasing 0.3 --mixup 0.2 --batch-size 64 > $OUT/cpu.log 2>&1
ferkit train --recipe seed --epochs 2 --data $OUT/tiny.csv --out $OUT/seed --sampler balanced --class-weights > $OUT/seed.log 2>&1
ferkit train --recipe best --epochs 2 --data $OUT/tiny.csv --out $OUT/best --batch-size 64 --cutmix 1.0 > $OUT/best.log 2>&1
python -c "
import torch, hashlib
for r in ('cpu','seed','best'):
    for f in ('fer_resnet18_best.pth','last.pth'):
        ck = torch.load('$OUT/%s/%s' % (r, f), weights_only=True)
        h = hashlib.sha256(b''.join(v.cpu().numpy().tobytes() for k, v in sorted(ck['model_state_dict'].items())))
        print(r, f, h.hexdigest()[:16], ck.get('val_accuracy'))
" | tee $OUT/hashes.txt
