import numpy as np
import pytest

from ferkit.infer.pipeline import FacePipeline
from ferkit.infer.predictor import Face
from ferkit.infer.tracking import FaceTracker, Track, anchor, follow, iou, remember


def test_iou():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0
    assert abs(iou((0, 0, 10, 10), (5, 0, 10, 10)) - 50 / 150) < 1e-9


def test_tracker_keeps_ids_and_adds_new_faces():
    tracker = FaceTracker(max_missed=2)
    found, _ = tracker.update([(100, 100, 50, 50)])
    assert [t.track_id for t in found] == [0]
    for step in range(1, 6):  # the face moves 8 px a frame; a second face appears on frame 3
        boxes = [(100 + 8 * step, 100, 50, 50)] + ([(400, 50, 60, 60)] if step >= 3 else [])
        found, _ = tracker.update(boxes)
        assert [t.track_id for t in found] == ([0, 1] if step >= 3 else [0])
    for _ in range(3):  # the first face leaves: kept for max_missed rounds, then dropped
        found, missing = tracker.update([(400, 50, 60, 60)])
    assert [t.track_id for t in found] == [1] and missing == [] and [t.track_id for t in tracker.tracks] == [1]
    found, _ = tracker.update([(140, 100, 50, 50), (400, 50, 60, 60)])
    assert [t.track_id for t in found] == [2, 1]  # a face that comes back after too long gets a new id


def test_smoothing_damps_a_flickering_input():
    tracker = FaceTracker(smoothing=5)
    track = Track(0, (0, 0, 10, 10))
    flicker = [np.array([0.9, 0.1]) if i % 2 else np.array([0.1, 0.9]) for i in range(40)]
    smoothed = np.array([tracker.smooth(track, p).copy() for p in flicker])
    assert np.ptp(smoothed[10:, 0]) < 0.35 * np.ptp(np.array(flicker)[10:, 0])
    assert abs(smoothed[10:, 0].mean() - 0.5) < 0.05
    assert np.allclose(smoothed.sum(1), 1)
    unsmoothed = FaceTracker(smoothing=1)
    track = Track(1, (0, 0, 10, 10))
    assert np.allclose([unsmoothed.smooth(track, p) for p in flicker], flicker)
    with pytest.raises(ValueError, match="at least 1 frame"):
        FaceTracker(smoothing=0)


def test_follow_finds_a_moved_patch(face_image):
    gray = face_image[:, :, 1].copy()
    track = Track(0, (215, 120, 210, 240))
    remember(gray, track)
    moved = np.roll(gray, (6, 15), axis=(0, 1))
    assert follow(moved, track)
    x, y, w, h = track.box
    assert abs(x - 230) <= 4 and abs(y - 126) <= 4
    assert not follow(np.zeros_like(gray), track)  # nothing like the face there: lost


class StubPredictor:
    """Probabilities that flip between two classes every frame, whatever the face."""

    class_names = ("a", "b")

    def __init__(self):
        self.calls = 0

    def predict_faces(self, frame, boxes, margin=None, landmarks=None):
        self.calls += 1
        p = np.array([0.8, 0.2]) if self.calls % 2 else np.array([0.2, 0.8])
        return [(self.label(p), int(p.argmax()), p) for _ in boxes]

    def label(self, probabilities):
        return self.class_names[int(probabilities.argmax())]


@pytest.mark.parametrize("detect_every", [1, 3])
def test_pipeline_tracks_a_moving_face(face_image, random_checkpoint, detect_every):
    from ferkit.infer.predictor import EmotionPredictor

    pipeline = FacePipeline(EmotionPredictor(random_checkpoint, device="cpu"), "haar", detect_every, 0.5)
    ids = []
    for step in range(9):
        faces = pipeline.process(np.roll(face_image, 6 * step, axis=1))
        assert len(faces) == 1 and isinstance(faces[0], Face)
        x, y, w, h = faces[0].box
        assert abs(x + w / 2 - (320 + 6 * step)) < 40  # the face's centre moves 6 px a frame
        ids.append(faces[0].track_id)
    assert ids == [0] * 9
    pipeline.reset()
    assert pipeline.process(face_image)[0].track_id == 0


def test_pipeline_smooths_flicker(face_image):
    pipeline = FacePipeline(StubPredictor(), "haar", smoothing=9)
    smoothed = [pipeline.process(face_image)[0].scores[0] for _ in range(30)]
    assert np.ptp(smoothed[15:]) < 0.1  # the raw input swings between 0.2 and 0.8 every frame
    still = FacePipeline(StubPredictor(), "haar", smoothing=1)
    assert [still.process(face_image)[0].emotion for _ in range(4)] == ["a", "b", "a", "b"]


def test_pipeline_on_stills_and_bad_settings(face_image, random_checkpoint):
    from ferkit.infer.predictor import EmotionPredictor

    pipeline = FacePipeline(EmotionPredictor(random_checkpoint, device="cpu"))
    faces = pipeline.process_image(face_image)
    assert [f.track_id for f in faces] == [0]
    assert pipeline.process_image(np.full((100, 100, 3), 50, np.uint8)) == []
    assert len(pipeline.process(face_image[:, :, 0])) == 1  # grayscale frames go through too
    with pytest.raises(ValueError, match="detect_every"):
        FacePipeline(pipeline.predictor, detect_every=0)
    with pytest.raises(ValueError, match="detect_scale"):
        FacePipeline(pipeline.predictor, detect_scale=2)


def test_a_hard_cut_ends_every_track(face_image, random_checkpoint):
    """A cut to a scene without faces: no track survives more than two frames past it; a face after
    the cut is a new track."""
    from ferkit.infer.predictor import EmotionPredictor

    pipeline = FacePipeline(EmotionPredictor(random_checkpoint, device="cpu"), "yunet", detect_every=5)
    scenery = np.random.default_rng(1).integers(150, 255, size=face_image.shape).astype(np.uint8)  # bright, faceless
    clip = [np.roll(face_image, 4 * i, axis=1) for i in range(7)] + [np.roll(scenery, 3 * i, axis=0) for i in range(6)]
    counts = [len(pipeline.process(frame)) for frame in clip]
    assert counts[:7] == [1] * 7 and counts[9:] == [0] * 4, counts  # the cut is at frame 7 (a following frame)
    assert counts[7] == 0  # in fact: ended at the cut itself
    back = pipeline.process(face_image)
    assert len(back) == 1 and back[0].track_id == 1  # a new shot, a new id


def test_a_followed_patch_that_stops_looking_like_the_face_is_dropped(face_image):
    gray = face_image[:, :, 0].copy()
    track = Track(0, (215, 120, 210, 240))
    remember(gray, track)
    anchor(gray, track)
    assert follow(gray, track)
    # the same spot, now a smooth gradient (a wall): the last template's texture may still match
    # somewhat, but it no longer looks like the confirmed face
    wall = np.tile(np.linspace(60, 200, gray.shape[1]).astype(np.uint8), (gray.shape[0], 1))
    track.box = (215, 120, 210, 240)
    assert not follow(wall, track, min_score=-1.0)  # whatever the match, the likeness check drops it
