"""Tests for synaptic_geometry.devices: the plumbing runs on the CPU; CUDA tests need a GPU."""

import numpy as np
import pytest
import torch
from PIL import Image

from synaptic_geometry.devices import (
    ImageFolder,
    MixedPrecision,
    image_folder_loader,
    resolve_device,
    seed_everything,
)
from synaptic_geometry import MirrorDescent

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; torch sees none here")


# ---------------------------------------------------------------- resolve_device


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="device 'cuda' was requested but .*use device 'auto' or 'cpu'"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # resolving touches no GPU
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda") == torch.device("cuda")


@pytest.mark.parametrize("setting", ["gpu", "CUDA", "cuda:0", "", None])
def test_resolve_device_rejects_unknown_settings(setting):
    with pytest.raises(ValueError, match="expected one of auto, cpu, cuda"):
        resolve_device(setting)


# ---------------------------------------------------------------- mixed precision


def _model_and_optimizer(seed):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
    return model, MirrorDescent(model.parameters(), lr=0.1, momentum=0.9, potential="3-norm")


def test_mixed_precision_is_a_no_op_on_the_cpu():
    amp = MixedPrecision(torch.device("cpu"))
    assert not amp.enabled and amp.state_dict() == {}
    x = torch.randn(8, 6, generator=torch.Generator().manual_seed(1))
    model, opt = _model_and_optimizer(0)
    reference, ref_opt = _model_and_optimizer(0)
    for _ in range(3):
        opt.zero_grad()
        with amp.autocast():
            assert not torch.is_autocast_enabled("cpu")
            out = model(x)
            loss = (out**2).mean()
        assert out.dtype == torch.float32
        assert amp.backward_and_step(loss, opt) is True
        ref_opt.zero_grad()
        (reference(x) ** 2).mean().backward()
        ref_opt.step()
    for a, b in zip(model.parameters(), reference.parameters()):
        assert torch.equal(a, b)
    amp.load_state_dict(amp.state_dict())  # an empty state loads


def test_mixed_precision_rejects_other_dtypes():
    with pytest.raises(ValueError, match="float16 or torch.bfloat16"):
        MixedPrecision(torch.device("cpu"), dtype=torch.float64)


@needs_cuda
def test_mixed_precision_on_cuda_keeps_float32_parameters_and_skips_non_finite_steps():
    device = torch.device("cuda")
    amp = MixedPrecision(device)
    torch.manual_seed(0)
    model = torch.nn.Linear(16, 4).to(device)
    opt = MirrorDescent(model.parameters(), lr=0.01, momentum=0.9, potential="negative_entropy")
    x = torch.randn(32, 16, device=device)
    with amp.autocast():
        out = model(x)
        loss = out.float().pow(2).mean()
    assert out.dtype == torch.float16
    before = [p.detach().clone() for p in model.parameters()]
    assert amp.backward_and_step(loss, opt)
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in model.parameters())
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    opt.zero_grad()
    moved = [p.detach().clone() for p in model.parameters()]
    with amp.autocast():
        loss = model(x).float().sum() * float("inf")
    assert amp.backward_and_step(loss, opt) is False  # the scaler found inf gradients: no step
    assert all(torch.equal(a, b) for a, b in zip(moved, model.parameters()))
    assert amp.state_dict()["scale"] < 65536.0


# ---------------------------------------------------------------- determinism


def _train(seed):
    info = seed_everything(seed, torch.device("cpu"))
    model, opt = _model_and_optimizer(seed)
    model.train()
    dropout = torch.nn.Dropout(0.3)
    x = torch.randn(16, 6)  # from the seeded global generator
    for _ in range(5):
        opt.zero_grad()
        model(dropout(x)).pow(2).mean().backward()
        opt.step()
    return info, [p.detach().clone() for p in model.parameters()]


def test_seed_everything_makes_cpu_training_bitwise_reproducible():
    info, first = _train(3)
    _, again = _train(3)
    _, other = _train(4)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    assert info.device == "cpu" and info.seed == 3 and info.threads == torch.get_num_threads()
    assert info.guarantee.startswith("CPU: bitwise identical") and f"{info.threads} here" in info.guarantee


@pytest.mark.parametrize("seed", [-1, 1.5, True, "3"])
def test_seed_everything_rejects_bad_seeds(seed):
    with pytest.raises(ValueError, match="non-negative integer"):
        seed_everything(seed, torch.device("cpu"))


def test_seed_everything_rejects_other_devices():
    with pytest.raises(ValueError, match="cpu and cuda"):
        seed_everything(0, torch.device("meta"))


@needs_cuda
def test_seed_everything_on_cuda_selects_deterministic_kernels():
    try:
        info = seed_everything(0, torch.device("cuda"))
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        assert not torch.backends.cudnn.benchmark and info.guarantee.startswith("CUDA:")
    finally:
        torch.use_deterministic_algorithms(False)


# ---------------------------------------------------------------- image folders

COUNTS = {"cat": 3, "dog": 2}


@pytest.fixture
def image_root(tmp_path):
    """Two classes of 4x5 RGB images; image k has every pixel equal to 20 k (its identity)."""
    k = 0
    for name, count in COUNTS.items():
        (tmp_path / name).mkdir()
        for i in range(count):
            Image.fromarray(np.full((5, 4, 3), 20 * k, dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
            k += 1
        (tmp_path / name / "notes.txt").write_text("not an image")
    (tmp_path / "README").write_text("not a class")
    return tmp_path


def test_image_folder_labels_and_pixels(image_root):
    dataset = ImageFolder(image_root)
    assert dataset.classes == ["cat", "dog"] and len(dataset) == 5
    for k in range(5):
        image, label = dataset[k]
        assert label == (0 if k < 3 else 1)
        assert image.shape == (3, 5, 4) and image.dtype == torch.float32
        torch.testing.assert_close(image, torch.full((3, 5, 4), 20 * k / 255.0))


def noisy_identity(image):
    """The image's identity and one draw from each generator a transform might use (in a worker)."""
    value = int(np.asarray(image)[0, 0, 0]) // 20
    return torch.tensor([value, torch.rand(()).item(), np.random.default_rng(np.random.randint(2**31)).random()])


def _epochs(root, seed, workers, epochs=2):
    loader = image_folder_loader(root, batch_size=2, seed=seed, workers=workers, transform=noisy_identity)
    return [torch.cat([batch for batch, _ in loader]) for _ in range(epochs)]


def test_loader_is_seeded_for_any_number_of_workers(image_root):
    main = _epochs(image_root, seed=0, workers=0)
    two = _epochs(image_root, seed=0, workers=2)
    again = _epochs(image_root, seed=0, workers=2)
    for epoch in range(2):
        assert sorted(two[epoch][:, 0].tolist()) == [0, 1, 2, 3, 4]  # every image once per epoch
        assert torch.equal(main[epoch][:, 0], two[epoch][:, 0])  # the order depends on the seed only
        assert torch.equal(two[epoch], again[epoch])  # and so does the workers' randomness
    orders = [tuple(_epochs(image_root, seed=s, workers=0, epochs=1)[0][:, 0].tolist()) for s in range(4)]
    assert len(set(orders)) > 1


def test_loader_settings(image_root):
    loader = image_folder_loader(image_root, batch_size=3, seed=0, shuffle=False, device=torch.device("cpu"))
    assert not loader.pin_memory and loader.num_workers == 0
    assert [labels.tolist() for _, labels in loader] == [[0, 0, 0], [1, 1]]
    assert image_folder_loader(image_root, batch_size=3, seed=0, device=torch.device("cuda")).pin_memory


def test_loader_rejects_bad_input(image_root, tmp_path_factory):
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        image_folder_loader(image_root, batch_size=0, seed=0)
    with pytest.raises(ValueError, match="workers must be an integer >= 0"):
        image_folder_loader(image_root, batch_size=2, seed=0, workers=-1)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        image_folder_loader(image_root / "missing", batch_size=2, seed=0)
    empty = tmp_path_factory.mktemp("empty")
    (empty / "cat").mkdir()
    with pytest.raises(ValueError, match="no images"):
        ImageFolder(empty)
