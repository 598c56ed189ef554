import numpy as np
import pytest

from ferkit.infer.detection import (
    DETECTORS,
    HaarDetector,
    YuNetDetector,
    create_detector,
    detect_faces,
    to_bgr,
    to_gray,
)


def _center_inside(box, x0=215, y0=120, x1=425, y1=360):
    x, y, w, h = box
    return x0 <= x + w / 2 <= x1 and y0 <= y + h / 2 <= y1


@pytest.mark.parametrize("name", DETECTORS)
def test_each_detector_finds_the_face(name, face_image):
    boxes = create_detector(name)(face_image)
    assert len(boxes) == 1 and _center_inside(boxes[0])
    assert detect_faces(face_image, detector=name) == boxes


@pytest.mark.parametrize("name", DETECTORS)
def test_downscaled_detection_returns_full_size_boxes(name, face_image):
    full = create_detector(name)(face_image)[0]
    half = create_detector(name)(face_image, scale=0.5)[0]
    assert _center_inside(half) and 0.8 < half[2] / full[2] < 1.25


@pytest.mark.parametrize("name", DETECTORS)
def test_no_face_and_odd_frames(name, face_image):
    detector = create_detector(name)
    assert detector(np.full((240, 320, 3), 127, np.uint8)) == []
    gray = to_gray(face_image)
    assert len(detector(gray)) == 1  # gray frames work for both
    assert len(detector(np.dstack([face_image, np.full(gray.shape, 255, np.uint8)]))) == 1  # BGRA
    assert len(detector(gray.astype(np.uint16) * 257)) == 1  # 16-bit


def test_yunet_keeps_faces_cut_by_the_edge(face_image):
    cut = np.ascontiguousarray(face_image[:, 300:])  # the face's left part is outside the frame
    boxes = YuNetDetector()(cut)
    assert boxes and boxes[0][0] < 20  # boxes may start left of the frame; coordinates stay signed


def test_yunet_detects_on_a_copy_as_small_as_min_size_allows(face_image):
    """A face of ``min_size`` pixels becomes ``smallest`` pixels on the copy the network sees;
    boxes come back in the frame's pixels, and a caller's own downscale is not applied twice."""
    seen = []
    for min_size, scale, expected in [(36, 1.0, 320), (9, 1.0, 640), (36, 0.5, 320)]:
        detector = YuNetDetector(min_size=min_size)
        raw = detector._detect_raw
        detector._detect_raw = lambda frame, raw=raw: seen.append(frame.shape[1]) or raw(frame)
        boxes = detector(face_image, scale)
        assert seen[-1] == expected
        assert len(boxes) == 1 and _center_inside(boxes[0])


def test_bad_detector_arguments(face_image):
    with pytest.raises(ValueError, match="unknown detector 'mtcnn'"):
        create_detector("mtcnn")
    with pytest.raises(ValueError, match="scale must be in"):
        HaarDetector()(face_image, scale=0)
    with pytest.raises(ValueError, match="empty frame"):
        HaarDetector()(np.zeros((0, 0, 3), np.uint8))


def test_to_bgr_layouts(face_image):
    gray = to_gray(face_image)
    assert to_bgr(gray).shape == (480, 640, 3)
    assert np.array_equal(to_bgr(face_image), face_image)
    assert np.array_equal(to_bgr(np.dstack([face_image, gray])), face_image)


def _resident_kib() -> int | None:
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return None


def test_yunet_called_directly_finds_what_the_wheel_finds(face_image):
    """The library's entry point with our buffer gives the wheel's binding's faces, several at once too."""
    yuface = pytest.importorskip("yuface")
    from ferkit.infer.detection import LibFaceDetection

    small = np.ascontiguousarray(face_image[::2, ::2])
    grid = np.ascontiguousarray(np.tile(small, (2, 3, 1)))  # six faces, an aspect ratio other than 4:3
    detect = LibFaceDetection()
    for frame in (face_image, grid, np.zeros((50, 70, 3), np.uint8)):
        ours, wheels = detect(frame), yuface.c_detect(np.ascontiguousarray(frame))
        assert ours.shape == wheels.shape and (ours[:, :15] == wheels[:, :15]).all()  # column 15 is unused
    assert len(detect(grid)) == 6


def test_yunet_memory_stays_flat():
    """Hundreds of detections keep resident memory flat (the wheel's binding kept 36 KiB a call: 10.5 MiB here)."""
    before = _resident_kib()
    if before is None:
        pytest.skip("resident memory is read from /proc")
    detector, frame = YuNetDetector(), np.full((120, 160, 3), 128, np.uint8)
    for _ in range(30):
        detector(frame)
    before = _resident_kib()
    for _ in range(300):
        detector(frame)
    assert _resident_kib() - before < 3 * 1024
