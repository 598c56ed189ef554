"""Does the int8 export score what the model scores, on this CPU? Full-range against 7-bit weights.

    python benchmarks/int8.py --data ../shared/data/fer2013.csv.gz \
        --folder ../shared/wild/muxspace-dev ../shared/posed/ckplus-dev --json reports/int8/fast-zen3.json

The model (``--model``, the bundled ``fast`` by default) is exported to int8 twice from the same
calibration faces: with full 8-bit weights (ferkit 0.5.0 and before) and with 7-bit weights (``reduce_range``,
the export's default since). Each runs through ``EmotionPredictor``'s ONNX Runtime backend beside the
model's PyTorch fp32 weights, with the default test-time views (``--tta flip``), on PublicTest (FER2013
and FER+ majority labels) and each labelled crop folder (balanced accuracy); also the median
milliseconds of one face (its views in one batch) on one thread. CPUs with AVX2 and no VNNI compute
uint8 x int8 products in pairs that saturate at 16 bits (ONNX Runtime's quantization guide): there the
full-range export loses accuracy; with VNNI, both exports should match PyTorch within a few tenths.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from common import machine, timed_median
from wild import score

from ferkit.data import load_fer2013
from ferkit.defaults import TTA_MODES
from ferkit.infer.export import calibration_faces, export_onnx
from ferkit.infer.models import resolve_model
from ferkit.infer.predictor import EmotionPredictor

FEATURES = ("avx2", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16")  # what decides int8's and bf16's kernels


def measure(predictor: EmotionPredictor, arrays, folders: list[str]) -> dict:
    """The rule's measures on PublicTest and the folders, and one face's latency."""
    r = score(predictor, arrays, "PublicTest", folders)
    face = arrays.split("PublicTest")[0][:1]
    return {"fer2013": r["fer2013"]["accuracy"], "ferplus": r["ferplus"]["accuracy"],
            "folders": {k: v["balanced_accuracy"] for k, v in r["folders"].items()},
            "ms_per_face": 1e3 * timed_median(lambda: predictor.predict_crops(list(face)), 200)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="fast", help="a bundled model's name or a checkpoint (default: fast)")
    parser.add_argument("--data", required=True)
    parser.add_argument("--folder", nargs="+", required=True, help="labelled face crops, one folder per label")
    parser.add_argument("--tta", default="flip", choices=TTA_MODES)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    arrays = load_fer2013(args.data)
    weights = resolve_model(args.model)
    calibration = calibration_faces(args.data)
    capabilities = torch.cpu.get_capabilities()
    record = {"command": "python benchmarks/int8.py " + " ".join(sys.argv[1:]),
              "date": datetime.date.today().isoformat(), "machine": machine(), "cpu": capabilities.get("cpu_name", ""),
              "cpu_features": {k: bool(capabilities.get(k)) for k in FEATURES}, "tta": args.tta, "results": {}}
    print(record["machine"], record["cpu"], record["cpu_features"], flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        candidates = {"pytorch_fp32": (weights, "torch")}
        for name, reduce_range in (("int8_full_range", False), ("int8_7bit", True)):
            path = Path(tmp) / f"{name}.onnx"
            export_onnx(weights, path, calibration, reduce_range=reduce_range)
            candidates[name] = (path, "onnx")
        for name, (path, backend) in candidates.items():
            predictor = EmotionPredictor(path, device="cpu", backend=backend, tta=args.tta, threads=1)
            result = measure(predictor, arrays, args.folder)
            record["results"][name] = result
            folders = " ".join(f"{k} {100 * v:.2f}" for k, v in result["folders"].items())
            print(f"{name}: FER2013 {100 * result['fer2013']:.2f} FER+ {100 * result['ferplus']:.2f} {folders} "
                  f"| {result['ms_per_face']:.2f} ms/face", flush=True)
    reference = record["results"]["pytorch_fp32"]
    for name in ("int8_full_range", "int8_7bit"):
        r = record["results"][name]
        gaps = [r["fer2013"] - reference["fer2013"], r["ferplus"] - reference["ferplus"],
                *(r["folders"][k] - reference["folders"][k] for k in r["folders"])]
        r["largest_loss_points"] = round(-100 * float(np.min(gaps)), 2)
        print(f"{name}: largest loss against PyTorch fp32 {r['largest_loss_points']:.2f} points", flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
