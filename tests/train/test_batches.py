"""The per-sample Dataset and DataLoaders (``--pipeline dataloader``)."""

import torch
from conftest import SPLIT_SIZES

from ferkit.train.batches import Fer2013Dataset, create_dataloaders


def test_dataset_and_dataloaders(fer_csv):
    ds = Fer2013Dataset(fer_csv, "PublicTest", num_classes=7)
    image, label = ds[0]
    assert image.shape == (1, 48, 48) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
    assert isinstance(label, int) and len(ds) == SPLIT_SIZES["PublicTest"]
    loaders = create_dataloaders(fer_csv, batch_size=16, num_classes=4)
    x, y = next(iter(loaders["train"]))
    assert x.shape == (16, 1, 48, 48) and y.max() < 4
    assert len(loaders["test"].dataset) == SPLIT_SIZES["PrivateTest"]
