import cv2
import numpy as np
import pytest

from ferkit.infer.align import TARGET, align_face, alignment, similarity, warp_face
from ferkit.infer.detection import create_detector
from ferkit.infer.pipeline import FacePipeline
from ferkit.infer.predictor import EmotionPredictor, crop_face
from ferkit.infer.tracking import FaceTracker


def _turn(points: np.ndarray, degrees: float, centre=(320, 240), scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    matrix = cv2.getRotationMatrix2D(centre, degrees, scale)
    return matrix, np.c_[points, np.ones(len(points))] @ matrix.T


def test_similarity_recovers_a_rotation_scale_and_shift():
    points = TARGET * 4 + (100, 50)
    matrix, moved = _turn(points, 25, scale=0.7)
    assert np.allclose(similarity(points, moved), matrix, atol=1e-9)
    assert np.allclose(np.c_[points, np.ones(5)] @ similarity(points).T, TARGET, atol=1e-9)


def test_landmarks_that_cannot_frame_a_face():
    assert alignment(None) is None
    assert alignment([(1, 2), (3, 4)]) is None  # too few
    assert alignment([(10, 10)] * 5) is None  # all in one spot
    with pytest.raises(ValueError, match="five distinct"):
        align_face(np.zeros((50, 50), np.uint8), [(10, 10)] * 5)


def test_an_aligned_face_is_the_same_whatever_the_head_roll(face_image):
    """The same face turned by 20 degrees: aligned crops agree, box crops do not."""
    gray = cv2.cvtColor(face_image, cv2.COLOR_BGR2GRAY)
    (face,) = create_detector("yunet").detect(gray)
    matrix, points = _turn(np.array(face.landmarks, float), 20)
    turned = cv2.warpAffine(gray, matrix, gray.shape[::-1], borderMode=cv2.BORDER_REPLICATE)
    upright, tilted = align_face(gray, face.landmarks), align_face(turned, points)
    assert upright.shape == tilted.shape == (48, 48) and upright.dtype == np.uint8
    aligned_gap = np.abs(upright.astype(int) - tilted).mean()
    box_gap = np.abs(crop_face(gray, face.box).astype(int) - crop_face(turned, face.box)).mean()
    assert aligned_gap < 4 and aligned_gap < box_gap / 3, (aligned_gap, box_gap)


def test_a_face_past_the_frame_edge_repeats_the_edge():
    frame = np.tile(np.arange(100, dtype=np.uint8), (80, 1))
    corner = warp_face(frame, similarity(TARGET - 30, TARGET))  # the face's top left beyond the frame
    assert corner.shape == (48, 48) and (corner[:10, :10] == 0).all()
    far = warp_face(frame, similarity(TARGET + 500, TARGET))  # wholly outside: the nearest edge
    assert far.shape == (48, 48)


def test_the_predictor_aligns_only_when_asked_and_given_landmarks(random_checkpoint, face_image):
    aligned = EmotionPredictor(random_checkpoint, device="cpu")
    boxed = EmotionPredictor(random_checkpoint, device="cpu", align=False)
    gray = cv2.cvtColor(face_image, cv2.COLOR_BGR2GRAY)
    (face,) = aligned.predict(face_image)
    assert face.landmarks is not None
    box_crop = crop_face(gray, face.box, aligned.margin)
    assert (boxed.crop(gray, face.box, face.landmarks) == box_crop).all()
    assert (aligned.crop(gray, face.box) == box_crop).all()  # no landmarks: the box crop
    assert (aligned.crop(gray, face.box, face.landmarks) == align_face(gray, face.landmarks)).all()
    assert not (aligned.crop(gray, face.box, face.landmarks) == box_crop).all()
    # the friendly API and the original one agree where each is given the same
    (_, _, probs) = boxed.predict_emotion_from_frame(face_image, face.box)
    assert np.allclose(boxed.predict(face_image)[0].scores, probs, atol=1e-6)
    assert np.allclose(aligned.predict_faces(face_image, [face.box], None, [face.landmarks])[0][2], face.scores,
                       atol=1e-6)


def test_landmarks_move_with_a_followed_box():
    tracker = FaceTracker()
    (track,), _ = tracker.update([(100, 100, 50, 50)], [[(110, 120), (140, 120), (125, 130), (115, 140), (135, 140)]])
    assert track.landmarks[0] == (110, 120)
    track.box = (120, 90, 100, 100)  # followed: moved and twice as large
    assert track.landmarks[0] == (140, 130) and track.landmarks[4] == (190, 170)
    (track,), _ = tracker.update([(120, 90, 100, 100)])  # a detector without landmarks
    assert track.landmarks is None


def test_every_frame_of_a_video_is_aligned(random_checkpoint, face_image):
    """Between detections too, faces carry the landmarks they are aligned by."""
    pipeline = FacePipeline(EmotionPredictor(random_checkpoint, device="cpu"), "yunet", detect_every=3)
    faces = [pipeline.process(np.roll(face_image, 3 * i, axis=1)) for i in range(4)]
    assert all(len(f) == 1 and f[0].landmarks is not None for f in faces)
    shift = faces[1][0].landmarks[0][0] - faces[0][0].landmarks[0][0]  # frame 1 is followed, not detected
    assert abs(shift - 3) <= 2
