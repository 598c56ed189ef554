"""Average the weights of several checkpoints of one model into one (a "model soup"), then refit its
temperature on PublicTest for the views users get, as ``ferkit calibrate`` does:

    python benchmarks/soup.py runs/a/fer_resnet18_best.pth runs/b/fer_resnet18_best.pth \
        --data ../shared/data/fer2013.csv.gz --out runs/soup/fer_resnet18_best.pth

Worth it only for checkpoints that began at the same weights and moved little (students warm-started
from one model): far apart, an average of weights is not an average of models.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ferkit.calibration import calibrate_model
from ferkit.checkpoint import CheckpointError, average_checkpoints, save_atomic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", help="two or more checkpoints of one architecture")
    parser.add_argument("--data", required=True, help="FER2013's CSV, for the temperature (PublicTest)")
    parser.add_argument("--out", required=True, help="the averaged checkpoint (a new file)")
    args = parser.parse_args()
    out = Path(args.out)
    if out.exists():
        sys.exit(f"error: {out} exists; choose a new file")
    if not Path(args.data).is_file():
        sys.exit(f"error: --data {args.data}: no such file (FER2013's CSV, for the temperature)")
    try:
        soup = average_checkpoints(args.checkpoints)
    except CheckpointError as e:
        sys.exit(f"error: {e}")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_atomic(soup, out)
    temperature, _ = calibrate_model(out, args.data)
    print(f"wrote {out}: the mean of {len(args.checkpoints)} checkpoints, temperature {temperature:.4f} "
          "(PublicTest, the default views)")


if __name__ == "__main__":
    main()
