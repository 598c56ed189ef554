"""Labelled face folders: label words, unknown folders, unreadable files, crops and full images."""

import cv2
import numpy as np
import pytest

from ferkit.folders import evaluate_folder, folder_class, list_folder


def test_label_words_map_into_each_task():
    assert [folder_class(w, 4) for w in ("anger", "Disgust", "fear", "happy", "sadness", "surprise", "neutral")] \
        == [0, 0, 1, 2, 1, 3, 3]
    assert folder_class("happiness", 7) == 3 and folder_class("surprised", 7) == 5
    assert folder_class("contempt", 4) is None and folder_class("contempt", 8) == 7
    assert folder_class("anger", 8) == 4 and folder_class("neutral", 8) == 0
    assert folder_class("selfies", 4) is None


@pytest.fixture
def folder(tmp_path, face_image):
    """happiness: two crops of the astronaut; neutral: a crop and a blank image; contempt and misc:
    skipped; sadness: an unreadable file."""
    face = face_image[120:360, 215:425]
    for label, images in {"happiness": [face, face[:, ::-1]], "neutral": [face, np.full((64, 64), 128, np.uint8)],
                          "contempt": [face], "misc": [face]}.items():
        (tmp_path / label).mkdir()
        for i, image in enumerate(images):
            cv2.imwrite(str(tmp_path / label / f"{i}.png"), image)
    (tmp_path / "sadness").mkdir()
    (tmp_path / "sadness" / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "neutral" / "notes.txt").write_text("not an image")
    return tmp_path


def test_listing_skips_unknown_folders_and_other_files(folder):
    files, labels, skipped = list_folder(folder, 4)
    assert [f.parent.name for f in files] == ["happiness", "happiness", "neutral", "neutral", "sadness"]
    assert labels.tolist() == [2, 2, 3, 3, 1] and skipped == ["contempt", "misc"]
    with pytest.raises(FileNotFoundError, match="no such folder"):
        list_folder(folder / "nowhere", 4)
    with pytest.raises(FileNotFoundError, match="no images in folders named after labels"):
        list_folder(folder / "misc", 4)


def test_crops_and_full_images_are_scored(folder, random_checkpoint):
    from ferkit.infer.predictor import EmotionPredictor

    predictor = EmotionPredictor(random_checkpoint, backend="torch", device="cpu")
    crops = evaluate_folder(predictor, folder, cropped=True)
    assert crops["images"] == 5 and crops["unreadable"] == 1 and crops["num_samples"] == 4
    assert crops["skipped_folders"] == ["contempt", "misc"] and 0 <= crops["balanced_accuracy"] <= 1
    full = evaluate_folder(predictor, folder, cropped=False, detector="yunet")
    assert full["unreadable"] == 1 and full["no_face"] == 1 and full["num_samples"] == 3  # the blank has no face
    assert full["detector"] == "yunet"

