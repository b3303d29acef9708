"""The image-restoration task's samples, Feast columns, the data gate's checks and the training dataset."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from flywheel.errors import DataError, FlywheelError
from flywheel.images import (
    ImageError,
    check_pair,
    decode_png,
    sha256_hex,
)
from flywheel.lazy import lazy_import
from flywheel.tasks.base import Suite, read_table, shown
from flywheel.tasks.image.fields import ImageFields
from flywheel.tasks.image.network import (  # a cheap import: no torch
    to_tensor,
)

pd = lazy_import("pandas")

PATCH = 48


MIN_SIDE = 16  # smallest side a sample may have: SSIM's 11x11 window must fit


class ImageDataset:
    """Input/target pairs read from the image store one at a time, centre-cropped to one square:
    ``patch`` pixels, or the frame's smallest side when that is smaller."""

    def __init__(self, frame, store, limits, patch: int):
        self.inputs = list(frame["input_uri"])
        self.targets = list(frame["target_uri"]) if "target_uri" in frame else None
        self.store, self.limits = store, limits
        sides = [patch]
        for column in ("width", "height"):
            if column in frame and len(frame):
                sides.append(int(frame[column].min()))
        self.patch = max(1, min(sides))

    def __len__(self) -> int:
        return len(self.inputs)

    def _image(self, uri: str):
        return _center_crop(to_tensor(decode_png(self.store.get(uri), self.limits)), self.patch)

    def __getitem__(self, i: int) -> dict:
        item = {"pixel_values": self._image(self.inputs[i])}
        if self.targets is not None:
            item["target"] = self._image(self.targets[i])
        return item


def _center_crop(image, size: int):
    h, w = image.shape[-2:]
    if h < size or w < size:
        raise FlywheelError(
            f"an image of {w}x{h} is smaller than its dataset's crop ({size} px): its size in the "
            "Feast row (width, height) does not match the stored image"
        )
    top, left = (h - size) // 2, (w - size) // 2
    return image[..., top : top + size, left : left + size]


def pd_map(a, b, fn):
    """``fn(x, y)`` over two aligned Series, as a boolean Series."""

    return pd.Series([bool(fn(x, y)) for x, y in zip(a, b, strict=True)], index=a.index)


class ImageData(ImageFields):
    """The data facet of the image task's spec."""

    sample_columns = ["input_uri", "input_sha256", "target_uri", "target_sha256", "width", "height"]
    feast_fields = {
        "input_uri": "String",
        "input_sha256": "String",
        "target_uri": "String",
        "target_sha256": "String",
        "prediction_uri": "String",
        "width": "Int64",
        "height": "Int64",
    }
    image_columns = ("input_uri", "target_uri", "prediction_uri")
    strata = None

    @classmethod
    def feast_columns(cls, record, images) -> dict[str, Any]:
        """Writes the input, target and predicted images to the store; the row keeps their
        URIs, hashes and the input's size. The stream job checked the PNGs; they are checked
        again against the contract's bounds (a record written to the clean topic by anything
        else must not make the ingestor decode a bomb), and one that fails raises
        FlywheelError naming the image, before anything is written."""

        if images is None:
            raise FlywheelError("image events need an image store (settings.images.store_uri)")
        found = {}
        for key, text in (
            ("input", record.image_png_b64),
            ("target", record.target_png_b64),
            ("prediction", record.prediction_png_b64),
        ):
            if text is None:
                continue
            try:
                data = base64.b64decode(text, validate=True)
                found[key] = (data, decode_png(data).shape[:2])
            except (ImageError, ValueError) as exc:
                raise FlywheelError(f"its {key} image is unusable: {exc}") from exc
        row: dict[str, Any] = {}
        for key, (data, (h, w)) in found.items():
            row[f"{key}_uri"] = images.put(data)
            if key != "prediction":
                row[f"{key}_sha256"] = sha256_hex(data)
            if key == "input":
                row["width"], row["height"] = w, h
        return row

    def is_sample(self, frame):
        return frame["input_uri"].notna() & frame["target_uri"].notna()

    def load_samples(self, path):
        """A JSONL/CSV file (or a DataFrame), a pair per line: ``input_png_b64`` +
        ``target_png_b64``, or ``input_path`` + ``target_path`` (relative to the file). The
        images are checked (PNG, size bounds, same size) and written to the image store."""

        if isinstance(path, pd.DataFrame):
            if "input_uri" in path:  # already samples of the store
                return path.copy()
            frame, path = path, Path("<frame>")
        else:
            path = Path(path)
            frame = read_table(path, "input_png_b64/target_png_b64 or input_path/target_path columns")
        store = self._store()
        rows, bad = [], []
        for line, rec in enumerate(frame.to_dict("records"), start=1):
            try:
                pair = [self._read_image(rec, side, path.parent) for side in ("input", "target")]
                arrays = [decode_png(data, self.limits) for data in pair]
                check_pair(*arrays)
            except (ImageError, DataError, ValueError) as exc:
                bad.append(f"line {line} ({rec['sample_id']}): {exc}")
                continue
            h, w = arrays[0].shape[:2]
            rows.append(
                {
                    "sample_id": rec["sample_id"],
                    "input_uri": store.put(pair[0]),
                    "input_sha256": sha256_hex(pair[0]),
                    "target_uri": store.put(pair[1]),
                    "target_sha256": sha256_hex(pair[1]),
                    "width": w,
                    "height": h,
                }
            )
        if bad:
            shown = "; ".join(bad[:5])
            raise DataError(f"{path}: {len(bad)} of {len(frame)} image pairs cannot be used: {shown}")
        return pd.DataFrame(rows, columns=["sample_id", *self.sample_columns])

    @staticmethod
    def _read_image(rec: dict, side: str, folder: Path) -> bytes:
        text, file = rec.get(f"{side}_png_b64"), rec.get(f"{side}_path")
        if isinstance(text, str):
            try:
                return base64.b64decode(text, validate=True)
            except ValueError as exc:
                raise DataError(f"{side}_png_b64 is not valid base64 ({exc})") from exc
        if isinstance(file, str):
            target = (folder / file).resolve()
            if not target.is_file():
                raise DataError(f"{side}_path {file!r} is not a file (paths are relative to the data file)")
            return target.read_bytes()
        raise DataError(f"no {side}_png_b64 or {side}_path")

    def quarantine_reasons(self, frame, labels: list[str], gate, mark) -> None:
        for side in ("input", "target"):
            uri, digest = frame[f"{side}_uri"], frame[f"{side}_sha256"]
            mark(uri.isna(), f"{side} image missing")
            mark(~uri.map(lambda v: isinstance(v, str)), f"{side} image URI is not a string")
            mark(
                ~pd_map(uri, digest, lambda u, d: isinstance(d, str) and str(u).endswith(f"{d}.png")),
                f"{side} image URI does not match its sha256",
            )
        small = (frame["width"].astype(float) < MIN_SIDE) | (frame["height"].astype(float) < MIN_SIDE)
        mark(small, f"image side under {MIN_SIDE} px")

    def shown_example(self, row) -> dict[str, Any]:
        return {"input": shown(row["input_uri"], 80), "size": f"{row['width']}x{row['height']}"}

    def expectations(self, frame, labels: list[str], gate) -> list[Suite]:
        import great_expectations as gx

        ex = gx.expectations
        sha = r"^[0-9a-f]{64}$"
        return [
            Suite(
                frame[["input_uri", "input_sha256", "target_uri", "target_sha256", "width", "height"]],
                [
                    ex.ExpectColumnValuesToNotBeNull(column="input_uri"),
                    ex.ExpectColumnValuesToNotBeNull(column="target_uri"),
                    ex.ExpectColumnValuesToMatchRegex(column="input_sha256", regex=sha),
                    ex.ExpectColumnValuesToMatchRegex(column="target_sha256", regex=sha),
                    ex.ExpectColumnValuesToBeBetween(column="width", min_value=MIN_SIDE),
                    ex.ExpectColumnValuesToBeBetween(column="height", min_value=MIN_SIDE),
                ],
            )
        ]

    def dataset(self, frame, labels: list[str]) -> ImageDataset:
        return ImageDataset(frame, self._store(), self.limits, self.patch)
