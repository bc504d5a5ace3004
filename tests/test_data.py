"""Tests of the data module: embedded digits, the documented split, local loaders, clear errors."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
from PIL import Image

from synaptic_geometry.experiments import data


def test_embedded_mnist_split_is_stratified_seeded_and_disjoint():
    full = data.embedded("mnist-embedded")
    assert full.shape == (1, 28, 28) and len(full) == 5000 and full.x.dtype == torch.float32
    pre, pool = data.pretrain_finetune_split(full)
    assert (len(pre), len(pool)) == (4000, 1000)
    assert np.bincount(pool.y.numpy()).tolist() == [100] * 10
    again_pre, _ = data.pretrain_finetune_split(data.embedded("mnist-embedded"))
    assert torch.equal(pre.x, again_pre.x)
    # no pool image appears in the pretraining part
    pre_rows = {row.tobytes() for row in pre.x.numpy().reshape(len(pre), -1)}
    assert not any(row.tobytes() in pre_rows for row in pool.x.numpy().reshape(len(pool), -1)[:200])


def test_digits_embedded_and_subset_seeding():
    digits = data.embedded("digits-embedded")
    assert digits.shape == (1, 8, 8) and len(digits) == 1797
    a, b, c = (data.subset(digits, 50, s) for s in (1, 1, 2))
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    with pytest.raises(ValueError, match="cannot draw 5000"):
        data.subset(digits, 5000, 0)


def make_image_folder(root, classes=("cat", "dog"), per_class=3, size=(20, 30)):
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    (root / "dog" / "notes.txt").write_text("not an image")
    return root


def test_tiny_image_folder(tmp_path):
    root = make_image_folder(tmp_path / "imgs")
    files, labels, classes = data.image_folder_files(root)
    assert classes == ["cat", "dog"] and labels.tolist() == [0, 0, 0, 1, 1, 1] and len(files) == 6
    loaded = data.load_image_folder(root, size=16, crop=12)
    assert loaded.x.shape == (6, 3, 12, 12) and loaded.n_classes == 2
    assert torch.isfinite(loaded.x).all()
    some = data.load_image_folder(root, n=4, seed=3, size=16, crop=12)
    again = data.load_image_folder(root, n=4, seed=3, size=16, crop=12)
    assert len(some) == 4 and torch.equal(some.y, again.y)
    full = data.load("imagefolder", root)
    assert full.x.shape == (6, 3, 224, 224)


def test_mnist_idx_reader(tmp_path):
    images = np.arange(3 * 28 * 28, dtype=np.uint64).reshape(3, 28, 28) % 256
    header = bytes([0, 0, 8, 3]) + b"".join(int(n).to_bytes(4, "big") for n in (3, 28, 28))
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + images.astype(np.uint8).tobytes()))
    labels_header = bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big")
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(labels_header + bytes([7, 2, 1]))
    mnist = data.load("mnist", tmp_path, train=False)
    assert mnist.x.shape == (3, 1, 28, 28) and mnist.y.tolist() == [7, 2, 1]


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load("mnist", tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load_image_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="needs a data root"):
        data.load("cifar10", None)
    with pytest.raises(FileNotFoundError, match="CIFAR-10 binary"):
        data.load("cifar10", tmp_path)
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no images"):
        data.load_image_folder(tmp_path / "empty")
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'; known"):
        data.load("imagenet", tmp_path)
    with pytest.raises(ValueError, match="unknown embedded"):
        data.embedded("mnist")
    with pytest.raises(ImportError, match="torchvision"):
        try:
            import torchvision  # noqa: F401
        except Exception:
            data.load("mnist", tmp_path, download=True)
        else:
            raise ImportError("torchvision is importable here; nothing to check")


def test_embedded_is_read_once_and_every_call_gets_its_own_tensors():
    first = data.embedded("digits-embedded")
    first.x[0] += 5.0  # a caller changing its copy in place
    first.y[0] = 9 - first.y[0]
    second = data.embedded("digits-embedded")
    assert float(second.x.max()) == 1.0 and not torch.equal(first.x, second.x)
    assert not torch.equal(first.y, second.y)
    assert data._embedded_raw.cache_info().currsize >= 1
    raw, _, _ = data._embedded_raw("digits-embedded")
    with pytest.raises(ValueError):
        raw[0, 0] = 1.0  # the cached pixels are read-only
