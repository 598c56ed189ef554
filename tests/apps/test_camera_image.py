import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def _run(script, *args, cwd):
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def test_image_demo_one_face(tmp_path, face_image, random_checkpoint):
    cv2.imwrite(str(tmp_path / "scene.png"), face_image)
    out = tmp_path / "annotated.jpg"
    result = _run("demo_image.py", tmp_path / "scene.png", "--out", out, "--model", random_checkpoint, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "1 face found" in result.stdout and "face 0: box (x=" in result.stdout and "%)" in result.stdout
    annotated = cv2.imread(str(out))
    assert annotated.shape == face_image.shape and not np.array_equal(annotated, face_image)


def test_image_demo_no_face(tmp_path, random_checkpoint):
    cv2.imwrite(str(tmp_path / "blank.png"), np.full((240, 320, 3), 200, np.uint8))
    result = _run("demo_image.py", tmp_path / "blank.png", "--model", random_checkpoint, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "no faces found" in result.stdout and (tmp_path / "annotated" / "blank_annotated.jpg").is_file()


def test_image_demo_bad_inputs(tmp_path, random_checkpoint):
    (tmp_path / "fake.jpg").write_text("not an image")
    result = _run("demo_image.py", tmp_path / "fake.jpg", tmp_path / "missing.jpg", "--model", random_checkpoint,
                  cwd=tmp_path)
    assert result.returncode == 1
    assert "fake.jpg: not a readable image" in result.stderr and "missing.jpg: no such file" in result.stderr
    assert "Traceback" not in result.stderr
    result = _run("demo_image.py", tmp_path / "fake.jpg", "--model", tmp_path / "fake.jpg", cwd=tmp_path)
    assert result.returncode == 2 and "not a readable PyTorch checkpoint" in result.stderr


def test_webcam_demo_without_camera(tmp_path):
    result = _run("demo_webcam.py", "--camera", "99", cwd=tmp_path)
    assert result.returncode == 1 and "camera 99: cannot open it" in result.stderr
    assert "Traceback" not in result.stderr


def test_webcam_demo_on_a_video_file(tmp_path, face_image, random_checkpoint):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 480))
    for shift in range(5):
        writer.write(np.roll(face_image, 4 * shift, axis=1))
    writer.release()
    result = _run("demo_webcam.py", "--camera", video, "--model", random_checkpoint, "--max-frames", 3, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("frame ") == 3 and "FPS" in result.stdout
