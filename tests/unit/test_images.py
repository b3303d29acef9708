"""Images: PNG decoding limits and conversions, the content-addressed store, the photo corpus."""

from __future__ import annotations

import base64
import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from flywheel.images import (
    ImageError,
    ImageLimits,
    LocalImageStore,
    check_pair,
    decode_png,
    decode_png_b64,
    encode_png,
    open_image_store,
    png_b64,
    sha256_hex,
)


def pixels(height: int = 40, width: int = 56, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def pil_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def with_size(png: bytes, width: int, height: int) -> bytes:
    """The same PNG with its IHDR width and height replaced (and the chunk's CRC fixed)."""
    body = b"IHDR" + struct.pack(">II", width, height) + png[24:29]
    return png[:12] + body + struct.pack(">I", zlib.crc32(body)) + png[33:]


# ---- decoding -------------------------------------------------------------------------------


def test_png_round_trip_is_exact_and_encoding_is_deterministic():
    arr = pixels()
    png = encode_png(arr)
    assert np.array_equal(decode_png(png), arr)
    assert encode_png(arr.copy()) == png
    assert np.array_equal(decode_png_b64(png_b64(arr)), arr)
    assert encode_png(pixels(seed=1)) != png


def test_not_a_png_is_refused_with_the_reason():
    buffer = io.BytesIO()
    Image.fromarray(pixels()).save(buffer, format="JPEG")
    with pytest.raises(ImageError, match="not a PNG image"):
        decode_png(buffer.getvalue())
    with pytest.raises(ImageError, match="not a PNG image"):
        decode_png(b"hello world")


def test_truncated_and_corrupted_pngs_are_refused():
    png = encode_png(pixels())
    with pytest.raises(ImageError, match="truncated or corrupted"):
        decode_png(png[: len(png) // 2])
    with pytest.raises(ImageError, match="no IHDR"):
        decode_png(png[:20])
    flipped = bytearray(png)
    flipped[len(png) // 2] ^= 0xFF  # inside the pixel data: its chunk CRC no longer matches
    with pytest.raises(ImageError, match="cannot be decoded: broken PNG file"):
        decode_png(bytes(flipped))
    bad_header = bytearray(png)
    bad_header[17] ^= 0x01  # width changed, CRC not fixed
    with pytest.raises(ImageError, match=r"IHDR.*corrupted"):
        decode_png(bytes(bad_header))


def test_a_decompression_bomb_is_refused_from_its_header_before_decoding():
    bomb = with_size(encode_png(pixels(16, 16)), 100_000, 100_000)
    assert len(bomb) < 2000
    with pytest.raises(ImageError, match="image is 100000x100000; the limit is 512 pixels per side"):
        decode_png(bomb)
    # With generous limits, Pillow's own bomb guard still holds (and is reported as an ImageError).
    huge = ImageLimits(max_side=200_000, max_pixels=10**11)
    with pytest.raises(ImageError, match="100000x100000; Pillow refuses it as a decompression bomb"):
        decode_png(bomb, huge)


def test_size_limits_give_precise_reasons():
    with pytest.raises(ImageError, match="image is 4x40; the minimum is 8 pixels per side"):
        decode_png(encode_png(pixels(40, 4)))
    with pytest.raises(ImageError, match="image is 600x20; the limit is 512 pixels per side"):
        decode_png(encode_png(pixels(20, 600)))
    with pytest.raises(ImageError, match=r"image is 100x100 \(10000 pixels\); the limit is 5000 pixels"):
        decode_png(encode_png(pixels(100, 100)), ImageLimits(max_pixels=5000))
    assert decode_png(encode_png(pixels(8, 512))).shape == (8, 512, 3)


def test_bad_base64_is_refused():
    good = png_b64(pixels())
    for bad in (good[:-3] + "!!!", good[:10] + "\n" + good[10:], good[:-1]):
        with pytest.raises(ImageError, match="not valid base64"):
            decode_png_b64(bad)
    with pytest.raises(ImageError, match="not a PNG"):
        decode_png_b64(base64.b64encode(b"GIF89a....").decode())


def test_grey_palette_and_16_bit_pngs_become_rgb_uint8():
    grey = np.arange(40 * 56, dtype=np.uint32).reshape(40, 56) % 256
    out = decode_png(pil_png(Image.fromarray(grey.astype(np.uint8), mode="L")))
    assert out.dtype == np.uint8 and out.shape == (40, 56, 3)
    assert np.array_equal(out[:, :, 0], grey) and np.array_equal(out[:, :, 2], grey)

    wide = (grey * 257).astype(np.uint16)  # 16-bit grey: scaled down, not clipped at 255
    image16 = Image.fromarray(wide)
    assert image16.mode.startswith("I")
    out16 = decode_png(pil_png(image16))
    assert out16.dtype == np.uint8 and np.array_equal(out16[:, :, 1], grey)

    rgb = pixels()
    palette = Image.fromarray(rgb).quantize(16)
    assert palette.mode == "P"
    assert np.array_equal(decode_png(pil_png(palette)), np.asarray(palette.convert("RGB")))


def test_alpha_is_composited_over_white():
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:8, :, 3] = 255  # opaque top half keeps its colour
    rgba[8:, :, 3] = 0  # transparent bottom half is white
    out = decode_png(pil_png(Image.fromarray(rgba, mode="RGBA")))
    assert out.dtype == np.uint8 and out.shape == (16, 16, 3)
    assert out[0, 0].tolist() == [200, 0, 0]
    assert out[15, 15].tolist() == [255, 255, 255]
    la = np.stack([np.full((16, 16), 100, np.uint8), np.full((16, 16), 128, np.uint8)], axis=2)
    half = decode_png(pil_png(Image.fromarray(la, mode="LA")))
    assert half[0, 0].tolist() == [177, 177, 177]  # (100*128 + 255*127) / 255 = 177.2


def test_encode_refuses_what_is_not_uint8_rgb():
    with pytest.raises(ImageError, match=r"uint8 array of shape \[H, W, 3\]"):
        encode_png(pixels().astype(np.float32))
    with pytest.raises(ImageError, match=r"shape \(40, 56\)"):
        encode_png(pixels()[:, :, 0])


def test_check_pair_names_both_sizes():
    check_pair(pixels(48, 48), pixels(48, 48, seed=1))
    with pytest.raises(ImageError, match="input is 48x48 but target is 64x48; a target must be the same"):
        check_pair(pixels(48, 48), pixels(48, 64))


def test_sha256_hex():
    assert sha256_hex(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


# ---- the store ------------------------------------------------------------------------------


def test_store_put_is_content_addressed_and_idempotent(tmp_path):
    store = LocalImageStore(tmp_path / "images")
    png = encode_png(pixels())
    uri = store.put(png)
    digest = sha256_hex(png)
    assert uri == (tmp_path / "images" / digest[:2] / f"{digest}.png").resolve().as_uri()
    assert store.put(png) == uri
    assert store.get(uri) == png and store.exists(uri)
    other = store.put(encode_png(pixels(seed=3)))
    assert other != uri and store.get(other) != png
    assert [p.name for p in (tmp_path / "images").rglob("*") if p.is_file()].count(f"{digest}.png") == 1


def test_store_detects_a_tampered_file_and_put_repairs_it(tmp_path):
    store = LocalImageStore(tmp_path)
    png = encode_png(pixels())
    uri = store.put(png)
    path = tmp_path / sha256_hex(png)[:2] / f"{sha256_hex(png)}.png"
    path.write_bytes(png[:-1] + b"\x00")
    with pytest.raises(ImageError, match="corrupted"):
        store.get(uri)
    assert store.put(png) == uri and store.get(uri) == png


def test_store_refuses_uris_it_does_not_own(tmp_path):
    store = LocalImageStore(tmp_path / "a")
    elsewhere = LocalImageStore(tmp_path / "b").put(encode_png(pixels()))
    digest = sha256_hex(b"x")
    for uri in (
        elsewhere,
        (tmp_path / "a" / digest[:2] / ".." / ".." / "b" / f"{digest}.png").as_uri(),
        (tmp_path / "a" / "zz" / f"{digest}.png").as_uri(),
        "/etc/passwd",
        "s3://bucket/key.png",
        "file://otherhost" + str(tmp_path / "a" / digest[:2] / f"{digest}.png"),
    ):
        with pytest.raises(ImageError):
            store.get(uri)
    with pytest.raises(ImageError, match="not an image of the store"):
        store.exists(elsewhere)
    missing = (tmp_path / "a" / digest[:2] / f"{digest}.png").as_uri()
    assert not store.exists(missing)
    with pytest.raises(ImageError, match="no image at"):
        store.get(missing)
    with pytest.raises(ImageError, match="only PNG bytes"):
        store.put(b"not a png")


def test_a_put_interrupted_before_the_rename_leaves_nothing_under_the_final_name(tmp_path, monkeypatch):
    store = LocalImageStore(tmp_path)
    png = encode_png(pixels())
    final = tmp_path / sha256_hex(png)[:2] / f"{sha256_hex(png)}.png"

    def killed(src, dst):
        assert os.path.getsize(src) == len(png)  # the temp file was complete, in the same folder
        assert os.path.dirname(src) == str(final.parent)
        raise OSError("killed")

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(OSError, match="killed"):
        store.put(png)
    assert not final.exists()
    assert list(final.parent.iterdir()) == []  # the temp file was cleaned up too
    monkeypatch.undo()
    uri = store.put(png)
    assert final.is_file() and store.get(uri) == png


def test_open_image_store_takes_paths_and_file_uris_only(tmp_path):
    assert isinstance(open_image_store(str(tmp_path)), LocalImageStore)
    store = open_image_store(tmp_path.as_uri())
    assert isinstance(store, LocalImageStore) and store.root == tmp_path.resolve()
    for uri, scheme in (("s3://bucket/images", "s3"), ("gs://bucket/x", "gs")):
        with pytest.raises(ImageError, match=rf"scheme '{scheme}'.*only local folders.*same ImageStore"):
            open_image_store(uri)
    with pytest.raises(ImageError, match="three slashes"):
        open_image_store("file://relative/folder")


# ---- the photo corpus -----------------------------------------------------------------------


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())


def test_photos_are_real_rgb_pictures_from_installed_packages():
    from training.image_corpus import GOLDEN_PHOTOS, PHOTO_FILES, TRAIN_PHOTOS, photos

    found = photos()
    assert set(found) == set(PHOTO_FILES) and not set(GOLDEN_PHOTOS) & set(TRAIN_PHOTOS)
    assert found["astronaut"].shape == (512, 512, 3) and found["chelsea"].shape == (300, 451, 3)
    for name, arr in found.items():
        assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3, name
        assert arr.std() > 20, name  # a picture, not a flat or empty file
    with pytest.raises(Exception, match=r"unknown photo name.*'lena'.*choose from astronaut"):
        photos(["lena"])


def test_patches_are_deterministic_non_flat_and_split_by_photo():
    from training.image_corpus import FLAT_STD, GOLDEN_PHOTOS, TRAIN_PHOTOS, patches

    first = patches(TRAIN_PHOTOS, size=32, seed=0)
    again = patches(TRAIN_PHOTOS, size=32, seed=0)
    assert [p for p, _ in first] == [p for p, _ in again]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(first, again, strict=True))
    assert len({p for p, _ in first}) == len(first) > 100
    assert all(a.shape == (32, 32, 3) and a.mean(axis=2).std() >= FLAT_STD for _, a in first)
    golden = patches(GOLDEN_PHOTOS, size=32, seed=0)
    assert {p.split("-")[0] for p, _ in golden} == set(GOLDEN_PHOTOS)
    assert not {p.split("-")[0] for p, _ in first} & set(GOLDEN_PHOTOS)
    assert [p for p, _ in patches(TRAIN_PHOTOS, size=32, seed=1)] != [p for p, _ in first]
    few = [p for p, _ in patches(["coffee", "rocket"], size=32, per_photo=3, seed=5)]
    assert len(few) == 6 and [p.split("-")[0] for p in few] == ["coffee"] * 3 + ["rocket"] * 3
    assert few == [p for p, _ in patches(["coffee", "rocket"], size=32, per_photo=3, seed=5)]
    assert few != [p for p, _ in patches(["coffee", "rocket"], size=32, per_photo=3, seed=6)]


def test_degradation_strings_parse_and_bad_ones_say_why():
    from training.image_corpus import Degradation, drift_schedule

    assert Degradation.parse("noise:15+jpeg:40").steps == (("noise", 15.0), ("jpeg", 40.0))
    assert (
        str(Degradation.parse(" blur:1.5 ")) == "blur:1.5"
        and Degradation.parse("noise:25").slug == "noise:25"
    )
    assert Degradation.parse("noise:15+jpeg:40").slug == "noise:15_jpeg:40"
    for bad, reason in (
        ("", "empty"),
        ("gauss:3", "unknown kind 'gauss'"),
        ("noise", "noise needs a number"),
        ("noise:abc", "noise needs a number"),
        ("noise:-5", "out of range"),
        ("jpeg:40.5", "must be a whole number"),
        ("jpeg:0", "out of range"),
        ("noise:nan", "out of range"),
        ("blur:50", "at most 10"),
        ("noise:15+", "unknown kind ''"),
    ):
        with pytest.raises(Exception, match=reason):
            Degradation.parse(bad)
    rounds = [str(drift_schedule(r)) for r in range(4)]
    assert rounds == ["noise:15", "noise:25", "noise:25+jpeg:40", "noise:25+jpeg:40"]
    with pytest.raises(Exception, match="negative"):
        drift_schedule(-1)


def test_degradations_are_deterministic_per_seed_and_stronger_levels_hurt_more():
    from training.image_corpus import Degradation, degrade, patches

    clean = patches(["astronaut"], size=48, per_photo=1, seed=0)[0][1]
    for kind, level in (("noise", 25), ("jpeg", 20), ("blur", 1.5)):
        out = degrade(clean, kind, level, seed=7)
        assert out.dtype == np.uint8 and out.shape == clean.shape
        assert np.array_equal(out, degrade(clean, kind, level, seed=7))
        assert mse(out, clean) > 1.0, kind
    assert not np.array_equal(degrade(clean, "noise", 25, 7), degrade(clean, "noise", 25, 8))
    assert mse(degrade(clean, "noise", 10, 7), clean) < mse(degrade(clean, "noise", 40, 7), clean)
    assert mse(degrade(clean, "jpeg", 80, 0), clean) < mse(degrade(clean, "jpeg", 10, 0), clean)
    assert mse(degrade(clean, "blur", 0.5, 0), clean) < mse(degrade(clean, "blur", 3, 0), clean)
    both = Degradation.parse("noise:25+jpeg:40").apply(clean, seed=3)
    assert not np.array_equal(both, Degradation.parse("noise:25").apply(clean, seed=3))


def test_restoration_frame_ids_are_unique_and_stable_and_pairs_decode():
    from training.image_corpus import restoration_frame

    frame = restoration_frame(40, "noise:25", seed=0, size=32)
    assert list(frame.columns) == ["sample_id", "input_png_b64", "target_png_b64"]
    assert frame["sample_id"].is_unique and len(frame) == 40
    assert all(s.startswith("photo-") and s.endswith("-noise:25-s0") for s in frame["sample_id"])
    assert frame.equals(restoration_frame(40, "noise:25", seed=0, size=32))
    assert list(restoration_frame(10, "noise:25", seed=0, size=32)["sample_id"]) == list(
        frame["sample_id"][:10]
    )
    other_seed = restoration_frame(40, "noise:25", seed=1, size=32)
    other_level = restoration_frame(40, "noise:15", seed=0, size=32)
    assert not set(frame["sample_id"]) & set(other_seed["sample_id"])
    assert not set(frame["sample_id"]) & set(other_level["sample_id"])
    noisy = [decode_png_b64(t) for t in frame["input_png_b64"]]
    clean = [decode_png_b64(t) for t in frame["target_png_b64"]]
    assert all(a.shape == (32, 32, 3) for a in noisy + clean)
    assert 200 < np.mean([mse(a, b) for a, b in zip(noisy, clean, strict=True)]) < 1000  # sigma 25: ~600
    residuals = [n.astype(int) - c for n, c in zip(noisy, clean, strict=True)]
    assert abs(np.corrcoef(residuals[0].ravel(), residuals[1].ravel())[0, 1]) < 0.3  # noise of its own
    with pytest.raises(Exception, match=r"distinct 96x96 patches.*ask for fewer rows"):
        restoration_frame(10_000, "noise:25", seed=0, size=96)


@pytest.mark.parametrize("corrupt", ["misalign", "blur", "swap"])
def test_corrupt_targets_differ_from_the_clean_ones_but_inputs_do_not(corrupt):
    from training.image_corpus import restoration_frame

    clean = restoration_frame(12, "noise:15", seed=0, size=32)
    bad = restoration_frame(12, "noise:15", seed=0, size=32, corrupt=corrupt)
    assert list(bad["input_png_b64"]) == list(clean["input_png_b64"])
    assert all(s.endswith(f"-bad-{corrupt}") for s in bad["sample_id"])
    assert not set(bad["sample_id"]) & set(clean["sample_id"])
    errors = []
    for good, wrong in zip(clean["target_png_b64"], bad["target_png_b64"], strict=True):
        target, corrupted = decode_png_b64(good), decode_png_b64(wrong)
        check_pair(target, corrupted)
        errors.append(mse(target, corrupted))
    assert min(errors) > 1, corrupt  # every target is wrong
    assert np.mean(errors) > 300, corrupt  # and on average further off than noise:15 is (~225)
    if corrupt == "swap":
        assert sorted(bad["target_png_b64"]) == sorted(clean["target_png_b64"])


def test_feedback_events_validate_and_the_cli_writes_submittable_lines(tmp_path, capsys):
    import json

    from flywheel.events import MAX_IMAGE_B64_CHARS, parse_event, validate_event
    from training.cli import photos_cmd
    from training.image_corpus import feedback_events, restoration_frame

    frame = restoration_frame(5, "noise:25+jpeg:40", seed=2, size=48)
    events = feedback_events(frame, "restorer", source="photos")
    for event, row in zip(events, frame.itertuples(), strict=True):
        parsed = validate_event(event)
        assert parsed.event_id == row.sample_id and parsed.task == "image-restoration"
        assert parsed.feedback.target_png_b64 == row.target_png_b64 and parsed.has_verified_answer
    assert feedback_events(frame, "restorer", seed=9)[0]["event_id"] == frame["sample_id"][0] + "-9"

    out = tmp_path / "events.jsonl"
    photos_cmd(
        out=str(out),
        rows=6,
        degradation="noise:25",
        size=48,
        seed=0,
        photos="coffee,rocket",
        corrupt="misalign",
        as_feedback="restorer",
    )
    lines = out.read_text().splitlines()
    assert len(lines) == 6 and "wrote 6 feedback events for restorer" in capsys.readouterr().out
    for line in lines:
        event = parse_event(line.encode())
        assert len(event.input.image_png_b64) <= MAX_IMAGE_B64_CHARS
        assert event.event_id.split("-")[1] in ("coffee", "rocket") and event.event_id.endswith(
            "-bad-misalign"
        )

    rows = tmp_path / "rows.jsonl"
    photos_cmd(out=str(rows), rows=3)
    first = json.loads(rows.read_text().splitlines()[0])
    assert set(first) == {"sample_id", "input_png_b64", "target_png_b64"}
    assert decode_png_b64(first["input_png_b64"]).shape == (48, 48, 3)
