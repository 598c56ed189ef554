"""The `ferkit` command itself: answers fast, says what went wrong, defaults to the bundled model."""

import subprocess
import sys
from pathlib import Path

import pytest

from ferkit import __version__
from ferkit.cli import main


def test_version_and_unknown_command(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"ferkit {__version__}"
    assert main(["imgae"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'imgae'" in err and "did you mean 'image'" in err
    assert main([]) == 0 and "train" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--help"], ["predict", "--help"], ["train", "--help"], ["serve", "--help"]])
def test_help_imports_no_torch_opencv_or_onnxruntime(argv):
    code = ("import sys; from ferkit.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'cv2', 'onnxruntime') if m in sys.modules]\n"
            "print('heavy:', heavy)")
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("heavy: []"), result.stdout[-300:]


def test_every_training_flag_says_what_it_does(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--photometric PHOTOMETRIC probability of each photometric effect" in out
    assert "--lr LR learning rate" in out and "cpu: 0.004" in out


def test_export_and_evaluate_default_to_the_bundled_model(tmp_path, capsys):
    assert main(["export", "--weights", str(tmp_path / "w.pt")]) == 0
    assert (tmp_path / "w.pt").stat().st_mode & 0o777 == 0o644 & ~_umask()
    folder = tmp_path / "faces" / "happiness"
    folder.mkdir(parents=True)
    import cv2

    from ferkit.apps.media import EXAMPLES_DIR

    face = cv2.imread(str(EXAMPLES_DIR / "obama.jpg"))[95:395, 342:642]
    cv2.imwrite(str(folder / "1.png"), face)
    assert main(["evaluate", "--folder", str(tmp_path / "faces"), "--cropped"]) == 0
    out = capsys.readouterr().out
    assert "balanced acc" in out and "fast_fp16.pt" in out


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_evaluate_scores_what_the_predictor_runs_by_default(fer_csv, random_checkpoint, capsys):

    from ferkit.data import load_fer2013, map_labels
    from ferkit.infer.predictor import EmotionPredictor

    assert main(["evaluate", "--model", str(random_checkpoint), "--data", str(fer_csv), "--backend", "torch"]) == 0
    out = capsys.readouterr().out
    assert "backend torch, fp32, test-time views: flip" in out  # as EmotionPredictor runs it by default
    accuracy = float(out.split("accuracy")[1].split()[0])
    pixels, emotion = load_fer2013(fer_csv).split("PrivateTest")
    predicted = EmotionPredictor(random_checkpoint, device="cpu", backend="torch").predict_crops(list(pixels)).argmax(1)
    assert accuracy == pytest.approx((predicted == map_labels(emotion, 4)).mean(), abs=1e-4)


@pytest.mark.parametrize("command", [["image", "photo.jpg"], ["train", "--data", "x.csv"],
                                     ["teach", "fast", "--data", "x.csv", "--out", "t.npz"]])
def test_an_unknown_device_is_one_line(command, capsys):
    assert main([*command, "--device", "foo"]) == 2
    err = capsys.readouterr().err
    assert err == "error: unknown device 'foo'; use auto, cpu, cuda or cuda:N\n"


def test_evaluate_prints_its_figures_before_an_unwritable_out_fails(fer_csv, random_checkpoint, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["evaluate", "--model", str(random_checkpoint), "--data", str(fer_csv), "--device", "cpu",
                 "--out", str(blocker / "reports")]) == 2
    captured = capsys.readouterr()
    assert "accuracy" in captured.out and "calibration: ECE" in captured.out  # the work is not lost
    assert captured.err.startswith(f"error: --out {blocker / 'reports'}: cannot write the reports there")


def test_a_path_that_cannot_be_written_is_one_line_naming_it(tmp_path, random_checkpoint, capsys):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes((Path(__file__).parents[1] / "src/ferkit/examples/obama.jpg").read_bytes())
    for argv, named in ((["predict", str(photo), "--output", str(photo / "x.jsonl")], photo / "x.jsonl"),
                        (["image", str(photo), "--out", str(photo / "out.jpg")], photo)):
        assert main([*argv, "--model", str(random_checkpoint)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {named}: ") and "a file stands where a folder is needed" in err
        assert "Errno" not in err and ".tmp" not in err and "Traceback" not in err


def test_serve_on_a_busy_port_says_so_before_serving(capsys):
    pytest.importorskip("uvicorn")
    import socket

    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    captured = capsys.readouterr()
    assert "serving on" not in captured.out
    assert captured.err.startswith(f"error: --host 127.0.0.1 --port {port}: cannot listen there")


def test_serve_stops_cleanly_on_sigterm(tmp_path):
    """A service manager's SIGTERM ends `ferkit serve` with its worker processes, no traceback and no
    'leaked semaphore objects' warning (uvicorn re-raised the signal past Python's clean-up)."""
    pytest.importorskip("uvicorn")
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    run = subprocess.Popen([sys.executable, "-m", "ferkit", "serve", "--port", str(port), "--workers", "2"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=2) as answer:
                if answer.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    run.send_signal(signal.SIGTERM)
    out, err = run.communicate(timeout=60)
    assert "serving on" in out
    assert "leaked semaphore" not in err and "Traceback" not in err, err
