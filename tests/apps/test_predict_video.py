"""ferkit predict (images and folders) and ferkit video (tracks, timeline, plot), bad inputs included."""

import csv
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from ferkit.cli import main


def _ferkit(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ferkit", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


@pytest.fixture
def photo_tree(tmp_path, face_image):
    root = tmp_path / "photos"
    (root / "nested" / "deeper").mkdir(parents=True)
    cv2.imwrite(str(root / "face.png"), face_image)
    cv2.imwrite(str(root / "nested" / "deeper" / "face2.jpg"), np.roll(face_image, 40, axis=1))
    cv2.imwrite(str(root / "nested" / "blank.png"), np.full((200, 300, 3), 90, np.uint8))
    (root / "nested" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (root / "notes.txt").write_text("not an image, not even by name")
    return root


def test_predict_csv_over_folders(photo_tree, tmp_path, random_checkpoint):
    out, annotated = tmp_path / "faces.csv", tmp_path / "annotated"
    result = _ferkit("predict", photo_tree, tmp_path / "missing.png", "--output", out, "--annotate", annotated,
                     "--model", random_checkpoint)
    assert result.returncode == 1  # two files skipped; the run went on
    assert "broken.jpg: not a readable image" in result.stderr and "missing.png: no such file" in result.stderr
    assert "blank.png: no face found" in result.stderr and "Traceback" not in result.stderr
    rows = list(csv.DictReader(out.open()))
    assert [r["file"].split("/")[-1] for r in rows] == ["face.png", "face2.jpg"]
    assert list(rows[0]) == ["file", "face", "x", "y", "w", "h", "emotion", "angry", "sad", "happy", "neutral"]
    for row in rows:
        probs = [float(row[c]) for c in ("angry", "sad", "happy", "neutral")]
        assert abs(sum(probs) - 1) < 1e-4 and row["emotion"] in ("angry", "sad", "happy", "neutral")
        assert int(row["w"]) > 80
    assert (annotated / "face.png").is_file() and (annotated / "nested" / "deeper" / "face2.jpg").is_file()
    assert "3 images, 2 faces, 2 skipped" in result.stderr


def test_predict_jsonl_to_stdout(photo_tree, random_checkpoint, capsys):
    assert main(["predict", str(photo_tree / "face.png"), "--format", "jsonl", "--model", str(random_checkpoint)]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 1 and records[0]["face"] == 0 and len(records[0]["box"]) == 4
    assert set(records[0]["probabilities"]) == {"angry", "sad", "happy", "neutral"}


def _write_video(path, frames, fps=10):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (frames[0].shape[1], frames[0].shape[0]))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def test_video_tracks_and_writes_everything(tmp_path, face_image, random_checkpoint):
    frames = [np.roll(face_image, 5 * i, axis=1) for i in range(12)]
    video = _write_video(tmp_path / "clip.avi", frames)
    out, table, plot = tmp_path / "annotated.avi", tmp_path / "timeline.csv", tmp_path / "timeline.png"
    result = _ferkit("video", video, "--out", out, "--csv", table, "--plot", plot, "--model", random_checkpoint,
                     "--detect-every", 3, "--detect-scale", 0.5, "--smoothing", 4)
    assert result.returncode == 0, result.stderr
    assert "12 frames" in result.stderr and "1 track" in result.stderr
    rows = list(csv.DictReader(table.open()))
    assert [int(r["frame"]) for r in rows] == list(range(12))
    assert {r["track"] for r in rows} == {"0"}
    assert abs(float(rows[10]["time"]) - 1.0) < 1e-6  # 10 fps
    xs = [int(r["x"]) for r in rows]
    assert xs[-1] - xs[0] > 30  # the box followed the face
    assert plot.stat().st_size > 10_000 and cv2.imread(str(plot)) is not None
    capture = cv2.VideoCapture(str(out))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    ok, first = capture.read()
    assert ok and first.shape == face_image.shape
    ok, second = capture.read()
    corner = second[:40, :160].astype(int)  # where the processing speed was drawn before 0.5: not in the file
    green = (corner[..., 1] > 180) & (corner[..., 0] < 90) & (corner[..., 2] < 90)
    assert green.sum() == 0


def test_video_bad_inputs(tmp_path, random_checkpoint):
    fake = tmp_path / "fake.mp4"
    fake.write_text("no video in here")
    for source, message in ((tmp_path / "missing.mp4", "no such video file"), (fake, "fake.mp4: ")):
        result = _ferkit("video", source, "--csv", tmp_path / "t.csv", "--model", random_checkpoint)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    result = _ferkit("video", fake, "--model", random_checkpoint)
    assert result.returncode == 2 and "--out, --csv, --plot and/or --summary" in result.stderr
    empty = tmp_path / "empty.avi"
    cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48)).release()  # a video with no frames
    result = _ferkit("video", empty, "--csv", tmp_path / "t.csv", "--model", random_checkpoint)
    assert result.returncode == 2 and "empty.avi: " in result.stderr and "Traceback" not in result.stderr


def test_video_with_no_faces_and_a_stop(tmp_path, random_checkpoint):
    from ferkit.apps.video import process_video
    from ferkit.infer.pipeline import FacePipeline
    from ferkit.infer.predictor import EmotionPredictor

    video = _write_video(tmp_path / "blank.avi", [np.full((120, 160, 3), 80, np.uint8)] * 6)
    pipeline = FacePipeline(EmotionPredictor(random_checkpoint, device="cpu"))
    result = process_video(video, pipeline, timeline_csv=tmp_path / "t.csv", plot=tmp_path / "p.png", max_frames=4,
                           progress=False)
    assert result.frames == 4 and len(result.timeline) == 0
    assert (tmp_path / "t.csv").read_text().startswith("frame,time,track") and (tmp_path / "p.png").is_file()


def test_outputs_never_overwrite_inputs(photo_tree, tmp_path, random_checkpoint, capsys):
    model = ["--model", str(random_checkpoint)]
    before = (photo_tree / "face.png").read_bytes()
    assert main(["predict", str(photo_tree), "--annotate", str(photo_tree), *model]) == 2
    assert "the output would overwrite an input" in capsys.readouterr().err
    assert main(["predict", str(photo_tree / "face.png"), "--output", str(photo_tree / "face.png"), *model]) == 2
    assert main(["image", str(photo_tree / "face.png"), "--out", str(photo_tree / "face.png"), *model]) == 2
    assert (photo_tree / "face.png").read_bytes() == before
    clip = _write_video(tmp_path / "in.avi", [cv2.imread(str(photo_tree / "face.png"))] * 3)
    for flag in ("--out", "--csv", "--plot"):
        size = clip.stat().st_size
        assert main(["video", str(clip), flag, str(clip), *model]) == 2
        assert clip.stat().st_size == size and "would overwrite an input" in capsys.readouterr().err


def test_same_named_images_from_two_folders_keep_an_output_each(tmp_path, face_image, random_checkpoint):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / "x.jpg"), face_image)
    out = tmp_path / "out"
    assert main(["image", str(tmp_path / "a" / "x.jpg"), str(tmp_path / "b" / "x.jpg"), "--out", str(out),
                 "--model", str(random_checkpoint)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["x_annotated-2.jpg", "x_annotated.jpg"]
    assert main(["predict", str(tmp_path / "a"), str(tmp_path / "b"), "--annotate", str(tmp_path / "ann"),
                 "--output", str(tmp_path / "f.csv"), "--model", str(random_checkpoint)]) == 0
    assert sorted(p.name for p in (tmp_path / "ann").iterdir()) == ["x-2.jpg", "x.jpg"]


def test_timeline_order_short_tracks_summary_and_quiet_speed(tmp_path, face_image, random_checkpoint, capsys):
    from ferkit.apps.video import plot_timeline, track_summary

    p = np.array([0.1, 0.6, 0.2, 0.1])
    timeline = {5: [(2.0 + t / 10, p) for t in range(30)],            # appears second, 3 s
                2: [(0.5 + t / 10, p[::-1]) for t in range(40)],      # appears first, 4 s, overlaps track 5
                9: [(4.0, p), (4.1, p)]}                              # too short to draw
    rows = track_summary(timeline, ("angry", "sad", "happy", "neutral"), 0.1)
    assert [r["track"] for r in rows] == [2, 5, 9]
    assert rows[0]["dominant_emotion"] == "happy" and rows[1]["share"]["sad"] == 1.0
    assert rows[1]["duration"] == pytest.approx(3.0) and rows[2]["frames"] == 2
    plot = tmp_path / "t.png"
    plot_timeline(timeline, ("angry", "sad", "happy", "neutral"), plot, duration=6.0)
    image = cv2.imread(str(plot))
    assert image is not None and image.shape[0] > 400  # two panels drawn, one track counted in a note
    video = _write_video(tmp_path / "clip.avi", [np.roll(face_image, 5 * i, axis=1) for i in range(8)])
    summary = tmp_path / "tracks.json"
    assert main(["video", str(video), "--summary", str(summary), "--quiet", "--model", str(random_checkpoint)]) == 0
    err = capsys.readouterr().err
    fps = float(err.split("(")[1].split(" FPS")[0])
    assert 0 < fps < 10_000  # measured, not 8 frames over a disabled bar's zero seconds
    tracks = json.loads(summary.read_text())
    assert len(tracks) == 1 and tracks[0]["frames"] == 8 and sum(tracks[0]["share"].values()) == pytest.approx(1)


def test_a_pixel_bomb_is_refused_from_its_header_and_the_batch_goes_on(photo_tree, tmp_path, random_checkpoint):
    from conftest import png_claiming

    (photo_tree / "bomb.png").write_bytes(png_claiming(100_000, 100_000))
    (photo_tree / "big.png").write_bytes(png_claiming(20_000, 20_000))
    out = tmp_path / "faces.csv"
    result = _ferkit("predict", photo_tree, "--output", out, "--model", random_checkpoint)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "bomb.png: 10,000,000,000 pixels, over the limit" in result.stderr
    assert "big.png: 400,000,000 pixels, over the limit" in result.stderr
    assert [r["file"].split("/")[-1] for r in csv.DictReader(out.open())] == ["face.png", "face2.jpg"]


def test_gifs_in_a_folder_are_reported_not_skipped_silently(tmp_path, face_image, random_checkpoint, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    cv2.imwrite(str(folder / "face.png"), face_image)
    (folder / "party.gif").write_bytes(b"GIF89a" + b"\0" * 100)
    assert main(["predict", str(folder), "--output", str(tmp_path / "f.csv"), "--model", str(random_checkpoint)]) == 1
    err = capsys.readouterr().err
    assert "party.gif: GIF images are not supported" in err and "1 image, 1 face, 1 skipped" in err


def test_sigterm_finishes_the_video_and_a_cut_short_file_is_reported(tmp_path, face_image, random_checkpoint):
    import signal
    import time

    clip = _write_video(tmp_path / "long.avi", [np.roll(face_image, i, axis=1) for i in range(300)])
    out = tmp_path / "annotated.mp4"
    table = tmp_path / "timeline.csv"
    run = subprocess.Popen([sys.executable, "-m", "ferkit", "video", str(clip), "--out", str(out), "--quiet",
                            "--csv", str(table), "--model", str(random_checkpoint)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out.exists() and out.stat().st_size > 0) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 130 and "interrupted after" in err and "Traceback" not in err
    capture = cv2.VideoCapture(str(out))  # an mp4 is playable only if it was closed properly
    assert capture.isOpened() and capture.read()[0]
    played = 1 + sum(1 for _ in iter(lambda: capture.read()[0], False))
    done = int(err.split("interrupted after ")[1].split()[0])
    with open(table) as f:  # the timeline ends on the video's last frame: a stop never splits a frame
        frames = {int(row["frame"]) for row in csv.DictReader(f)}
    assert played == done and max(frames) == done - 1 and frames <= set(range(done))

    cut = tmp_path / "cut.avi"
    cut.write_bytes(clip.read_bytes()[: clip.stat().st_size * 2 // 5])  # the header still says 300 frames
    result = _ferkit("video", cut, "--csv", tmp_path / "t.csv", "--model", random_checkpoint)
    assert result.returncode == 1 and "of the 300 frames the file declares" in result.stderr


@pytest.mark.parametrize("audio_codec, suffix", [("aac", ".mp4"), ("pcm_s16le", ".mkv")])
def test_video_output_is_h264_with_the_input_sound(tmp_path, face_image, random_checkpoint, audio_codec, suffix):
    import av
    from conftest import clip_with_tone

    clip = clip_with_tone(tmp_path / f"in{suffix}", [np.roll(face_image, 3 * i, axis=1) for i in range(20)],
                          audio_codec=audio_codec)
    out = tmp_path / "out.mp4"
    assert main(["video", str(clip), "--out", str(out), "--quiet", "--model", str(random_checkpoint)]) == 0
    with av.open(str(out)) as written:
        video, audio = written.streams.video[0], written.streams.audio[0]
        assert video.codec_context.name == "h264" and video.average_rate == 10
        assert audio.codec_context.name == "aac"  # copied, or re-encoded where MP4 cannot hold PCM
        assert abs(float(audio.duration * audio.time_base) - 2.0) < 0.1
    capture = cv2.VideoCapture(str(out))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 20 and capture.read()[0]
    assert main(["video", str(clip), "--out", str(tmp_path / "old.mp4"), "--codec", "mp4v", "--quiet",
                 "--model", str(random_checkpoint)]) == 0
    with av.open(str(tmp_path / "old.mp4")) as old:
        assert old.streams.video[0].codec_context.name == "mpeg4" and not old.streams.audio


def test_a_run_that_reads_nothing_leaves_the_output_as_it_was(photo_tree, tmp_path, random_checkpoint, capsys):
    keep = tmp_path / "keep.jsonl"
    keep.write_text('{"file": "earlier"}\n')
    for missing in (tmp_path / "typo_dir", photo_tree / "nested" / "broken.jpg"):
        assert main(["predict", str(missing), "--output", str(keep), "--model", str(random_checkpoint)]) == 1
        assert keep.read_text() == '{"file": "earlier"}\n'  # not emptied
        assert "left as it was" in capsys.readouterr().err
    assert not list(tmp_path.glob("keep.jsonl*.tmp"))
    assert main(["predict", str(photo_tree / "face.png"), "--output", str(keep), "--model",
                 str(random_checkpoint)]) == 0
    assert json.loads(keep.read_text().splitlines()[0])["file"].endswith("face.png")
    assert oct(keep.stat().st_mode & 0o777) == "0o644"
