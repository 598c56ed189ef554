"""``ferkit webcam``: live emotion recognition from a camera, in a window or printed.

    ferkit webcam [--camera 0]                       # q quits, s saves a screenshot
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2

from ferkit.apps.media import FpsMeter, annotate, open_video
from ferkit.infer.pipeline import FacePipeline


def _has_gui() -> bool:
    """opencv-python-headless (our dependency) has no windows; opencv-python does."""
    try:
        cv2.namedWindow("ferkit")
        return True
    except cv2.error:
        return False


def run_camera(camera: str, pipeline: FacePipeline, max_frames: int = 0, screenshots: str = ".") -> int:
    """``ferkit webcam``: live emotions from a camera (an index such as ``"0"``) or a video file, in a
    window where OpenCV has one (q quits, s saves a screenshot into ``screenshots``), else printed.
    Returns the exit status."""
    try:
        capture, _, _ = open_video(int(camera) if camera.isdigit() else camera)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    gui = _has_gui()
    if not gui:
        print("no display window available (opencv-python-headless): printing results instead; "
              "for a window, `pip install \"opencv-python<5\"` in place of opencv-python-headless. "
              "Ctrl+C stops.", file=sys.stderr)
    meter = FpsMeter()
    try:
        while True:
            ok, frame = capture.read()
            if not ok or frame is None:
                if meter.frames == 0:
                    print(f"error: camera {camera!r} gave no frames", file=sys.stderr)
                    return 1
                break
            faces = pipeline.process(frame)
            fps = meter.tick()
            if gui:
                shown = annotate(frame, faces, fps)
                cv2.imshow("ferkit", shown)
                key = cv2.waitKey(1) & 0xFF
                if key == ord("q"):
                    break
                if key == ord("s"):
                    target = Path(screenshots) / f"ferkit_{time.strftime('%Y%m%d_%H%M%S')}_{meter.frames}.jpg"
                    cv2.imwrite(str(target), shown)
                    print(f"screenshot saved: {target}")
            else:
                summary = ", ".join(f"#{f.track_id} {f.emotion} {f.confidence:.0%}" for f in faces)
                print(f"frame {meter.frames}: {summary or 'no face'} ({fps:.1f} FPS)")
            if max_frames and meter.frames >= max_frames:
                break
    except KeyboardInterrupt:
        pass
    finally:
        capture.release()
        if gui:
            cv2.destroyAllWindows()
    return 0
