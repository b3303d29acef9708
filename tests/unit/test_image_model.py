"""The image-restoration model: identity start, determinism, LoRA training and save/load, metrics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from flywheel.tasks.image.network import (
    LORA_TARGETS,
    MODULES_TO_SAVE,
    RestorationNetConfig,
    build_denoiser,
    charbonnier,
    lora_config,
    psnr,
    ssim,
    to_tensor,
    to_uint8,
)

TINY = RestorationNetConfig.tiny()


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """These tensors are tiny: with 2 threads, a busy machine makes OpenMP's waits cost 10-50x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def smooth_images(n: int, size: int, seed: int) -> torch.Tensor:
    """Natural-ish images: random coarse grids upsampled bicubically, in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, size // 8, size // 8, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic").clamp(0, 1)


def lora_model(seed: int = 0):
    from peft import get_peft_model

    torch.manual_seed(seed)  # LoRA A matrices are drawn from the global generator
    return get_peft_model(build_denoiser(TINY, seed=seed), lora_config())


def train(model, steps: int, seed: int = 0, sigma: float = 0.1) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    clean = smooth_images(32, 32, seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    losses = []
    for _ in range(steps):
        batch = clean[torch.randint(0, len(clean), (8,), generator=g)]
        noisy = (batch + sigma * torch.randn(batch.shape, generator=g)).clamp(0, 1)
        loss = charbonnier(model(noisy), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


# --- the network ---------------------------------------------------------------------------------


def test_config_round_trips_through_json():
    cfg = RestorationNetConfig(embed_dim=24, depths=(2, 2, 2), num_heads=(2, 2, 2))
    again = RestorationNetConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert RestorationNetConfig.from_dict(RestorationNetConfig().to_dict()) == RestorationNetConfig()
    with pytest.raises(ValueError):
        RestorationNetConfig.from_dict({"embed_dim": 16, "bogus": 1})
    with pytest.raises(ValueError):
        RestorationNetConfig(embed_dim=10, num_heads=(3,), depths=(2,))


def test_default_config_is_small():
    n = sum(p.numel() for p in build_denoiser(RestorationNetConfig()).parameters())
    assert n < 300_000


@pytest.mark.parametrize("hw", [(8, 8), (32, 32), (48, 48), (37, 50)])
def test_fresh_build_is_the_identity_at_any_size(hw):
    x = torch.rand(2, 3, *hw)
    with torch.no_grad():
        y = build_denoiser(TINY)(x)
    assert y.shape == x.shape
    assert torch.allclose(y, x, atol=1e-6)


def test_same_seed_same_weights_other_seed_other_weights():
    a, b, c = (build_denoiser(TINY, seed=s).state_dict() for s in (3, 3, 4))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_build_does_not_disturb_the_global_generator():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_denoiser(TINY, seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_lora_targets_and_modules_to_save_match_the_network():
    model = lora_model()
    names = [n for n, _ in model.named_modules()]
    for suffix in LORA_TARGETS:
        assert any(n.endswith(f"{suffix}.lora_A") for n in names), suffix
    for suffix in MODULES_TO_SAVE:
        assert any(n.endswith(f"{suffix}.modules_to_save") for n in names), suffix
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "modules_to_save" in n for n in trainable)


def test_lora_training_lowers_the_loss():
    model = lora_model()
    losses = train(model, steps=40)
    first, last = np.mean(losses[:3]), np.mean(losses[-5:])
    assert last < 0.8 * first, (first, last)
    # and it denoises held-out images better than doing nothing
    clean = smooth_images(8, 32, seed=99)
    noisy = (clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(5))).clamp(0, 1)
    with torch.no_grad():
        restored = model(noisy)
    assert psnr(restored, clean).mean() > psnr(noisy, clean).mean() + 1.0


def test_save_and_load_through_peft_gives_identical_outputs(tmp_path):
    from peft import PeftModel

    model = lora_model()
    train(model, steps=3)
    model.save_pretrained(tmp_path, safe_serialization=True)
    assert (tmp_path / "adapter_model.safetensors").is_file()
    loaded = PeftModel.from_pretrained(build_denoiser(TINY), tmp_path).eval()
    x = torch.rand(2, 3, 24, 40)
    with torch.no_grad():
        expected, got, fresh = model(x), loaded(x), build_denoiser(TINY)(x)
    assert torch.equal(got, expected)
    assert not torch.allclose(expected, fresh)  # the trained weights really were saved


# --- metrics ---------------------------------------------------------------------------------------


def test_charbonnier():
    x = torch.zeros(2, 3, 4, 4)
    assert charbonnier(x, x).item() == pytest.approx(1e-3)
    assert charbonnier(x + 0.5, x, eps=0.0).item() == pytest.approx(0.5)


def test_psnr_on_known_pairs():
    x = torch.rand(4, 3, 16, 16) * 0.8
    assert psnr(x, x).shape == (4,)
    assert torch.allclose(psnr(x, x), torch.full((4,), 100.0))
    assert psnr(x, x, max_db=60.0)[0].item() == pytest.approx(60.0)
    for d in (0.1, 0.05):
        assert torch.allclose(psnr(x + d, x), torch.full((4,), 10 * math.log10(1 / d**2)), atol=1e-3)
    assert psnr(x + 0.1, x)[0].item() == pytest.approx(20.0, abs=1e-3)
    # per sample: only the second image is off
    y = x.clone()
    y[1] += 0.1
    got = psnr(y, x)
    assert got[1].item() == pytest.approx(20.0, abs=1e-3)
    assert got[0].item() == got[2].item() == 100.0
    # predictions are clamped to [0, 1] first
    target = torch.ones(1, 3, 8, 8)
    assert psnr(target + 5.0, target).item() == 100.0


def reference_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """skimage's structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=1) for C x H x W arrays, written out window by window."""
    r = np.arange(11) - 5
    g = np.exp(-(r**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    per_channel = []
    for x, y in zip(a, b, strict=True):
        values = []
        for i in range(x.shape[0] - 10):
            for j in range(x.shape[1] - 10):
                px, py = x[i : i + 11, j : j + 11], y[i : i + 11, j : j + 11]
                mx, my = (w * px).sum(), (w * py).sum()
                vx, vy = (w * px * px).sum() - mx**2, (w * py * py).sum() - my**2
                cxy = (w * px * py).sum() - mx * my
                values.append(((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
        per_channel.append(np.mean(values))
    return float(np.mean(per_channel))


def test_ssim_identical_images_is_one():
    x = torch.rand(3, 3, 16, 16)
    out = ssim(x, x)
    assert out.shape == (3,)
    assert torch.allclose(out, torch.ones(3), atol=1e-6)


def test_ssim_matches_a_windowed_reference():
    g = torch.Generator().manual_seed(0)
    clean = smooth_images(2, 16, seed=1)
    noisy = (clean + 0.1 * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    got = ssim(noisy, clean)
    for k in range(2):
        expected = reference_ssim(noisy[k].double().numpy(), clean[k].double().numpy())
        assert got[k].item() == pytest.approx(expected, abs=1e-5)
    other = torch.rand(1, 3, 19, 23, generator=g)
    assert ssim(other, clean[:1, :, :1, :1].expand(1, 3, 19, 23)).item() == pytest.approx(
        reference_ssim(other[0].double().numpy(), np.broadcast_to(clean[0, :, :1, :1].numpy(), (3, 19, 23))),
        abs=1e-5,
    )


def test_ssim_of_constant_images_is_the_luminance_term():
    a, b = 0.3, 0.7
    x, y = torch.full((1, 3, 16, 16), a), torch.full((1, 3, 16, 16), b)
    c1 = 0.01**2
    assert ssim(x, y).item() == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=1e-6)


def test_ssim_falls_as_noise_grows():
    clean = smooth_images(2, 32, seed=3)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(clean.shape, generator=g)
    scores = [ssim((clean + s * noise).clamp(0, 1), clean) for s in (0.02, 0.05, 0.1, 0.2)]
    for lo, hi in zip(scores[1:], scores[:-1], strict=True):
        assert (lo < hi).all()
    assert (scores[0] < 1).all()
    with pytest.raises(ValueError):
        ssim(torch.rand(1, 3, 10, 10), torch.rand(1, 3, 10, 10))


# --- conversions -----------------------------------------------------------------------------------


def test_uint8_round_trip_is_exact():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(17, 23, 3), dtype=np.uint8)
    image[0, 0] = (0, 255, 128)
    t = to_tensor(image)
    assert t.shape == (3, 17, 23) and t.dtype == torch.float32
    assert t.min() >= 0.0 and t.max() <= 1.0
    back = to_uint8(t)
    assert back.dtype == np.uint8 and back.shape == image.shape
    assert np.array_equal(back, image)
    assert np.array_equal(to_uint8(torch.full((3, 2, 2), 2.0)), np.full((2, 2, 3), 255, np.uint8))
    assert np.array_equal(to_uint8(torch.full((3, 2, 2), -1.0)), np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(ValueError):
        to_tensor(image.astype(np.float32))
