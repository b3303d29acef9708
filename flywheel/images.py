"""Images for the image-restoration task: safe PNG decoding, encoding, and a content-addressed store.

Every image crossing a boundary (an event, a file, a store) is a PNG. :func:`decode_png`
is the one way in: it checks the size in the PNG header *before* any pixel is decoded
(so a decompression bomb costs nothing), then decodes with Pillow and returns an
``uint8`` array ``[H, W, 3]``. Inputs that are valid PNGs but not 8-bit RGB are converted:

* grey (``L``, ``1``) and palette (``P``) images become RGB;
* 16-bit grey (``I;16``/``I``) is scaled to 8 bits (``v / 257``, rounded), not clipped;
* an alpha channel (``LA``, ``RGBA``, ``PA``, palette transparency) is composited over a
  white background, which is how viewers show it and makes fully transparent pixels
  deterministic (their stored colour is meaningless).

:func:`encode_png` gives the same bytes for the same pixels (no metadata, fixed
compression) with the same Pillow/zlib build, so a content hash identifies an image.

:class:`LocalImageStore` keeps PNGs by sha256 under a folder; :func:`open_image_store` is the
factory (only ``file://`` and plain paths in this build; an object store would implement the
same :class:`ImageStore` interface). numpy and Pillow are imported inside functions, so
importing this module is cheap.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
import struct
import tempfile
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from flywheel.errors import FlywheelError
from flywheel.lazy import lazy_import

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_import("numpy")


Image = lazy_import("PIL.Image")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ImageError(FlywheelError):
    """An image (or an image store URI) that cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class ImageLimits:
    """Bounds every decoded image must satisfy (sides in pixels)."""

    min_side: int = 8
    max_side: int = 512
    max_pixels: int = 512 * 512

    def check(self, width: int, height: int) -> None:
        """ImageError unless a ``width`` x ``height`` image is within these limits."""
        size = f"{width}x{height}"
        if min(width, height) < self.min_side:
            raise ImageError(
                f"image is {size}; the minimum is {self.min_side} pixels per side; send a larger image"
            )
        if max(width, height) > self.max_side:
            raise ImageError(
                f"image is {size}; the limit is {self.max_side} pixels per side; "
                "downscale or crop it before sending"
            )
        if width * height > self.max_pixels:
            raise ImageError(
                f"image is {size} ({width * height} pixels); the limit is {self.max_pixels} pixels; "
                "downscale or crop it before sending"
            )


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a PNG from its IHDR chunk, read without decoding anything."""
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise ImageError(
            f"PNG is {len(data)} bytes and has no IHDR header chunk; the file is truncated or corrupted"
        )
    (length,) = struct.unpack(">I", data[8:12])
    width, height = struct.unpack(">II", data[16:24])
    (crc,) = struct.unpack(">I", data[29:33])
    if length != 13 or zlib.crc32(data[12:29]) != crc:
        raise ImageError("PNG header chunk (IHDR) is corrupted (bad length or checksum); re-encode the image")
    return width, height


def _to_rgb(im) -> np.ndarray:
    """A Pillow image of any PNG mode as uint8 [H, W, 3] (see the module docstring)."""

    if im.mode == "RGB":
        return np.asarray(im, dtype=np.uint8).copy()
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        wide = np.asarray(im).astype(np.int64)
        grey = np.clip((wide * 255 + 32767) // 65535, 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    rgba = np.asarray(im.convert("RGBA"), dtype=np.uint16)
    rgb, alpha = rgba[:, :, :3], rgba[:, :, 3:]
    over_white = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
    return over_white.astype(np.uint8)


def decode_png(data: bytes, limits: ImageLimits = ImageLimits()) -> np.ndarray:
    """PNG bytes → uint8 array [H, W, 3]; ImageError for anything else, too big, too small or broken."""

    if not isinstance(data, bytes | bytearray | memoryview):
        raise ImageError(f"expected PNG bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data.startswith(PNG_MAGIC):
        raise ImageError(
            f"not a PNG image (the first bytes are {data[:8]!r}, not the PNG signature); "
            "send PNG bytes (convert JPEG and other formats to PNG first)"
        )
    width, height = png_size(data)
    limits.check(width, height)  # before Pillow allocates or inflates anything
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
            im.verify()  # chunk checksums; no pixel decoding
        with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
            im.load()
            return _to_rgb(im)
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image is {width}x{height}; Pillow refuses it as a decompression bomb") from exc
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error, struct.error) as exc:
        raise ImageError(
            f"PNG ({width}x{height}, {len(data)} bytes) cannot be decoded: {exc}; "
            "the file is truncated or corrupted, re-encode it"
        ) from exc


def decode_png_b64(text: str, limits: ImageLimits = ImageLimits()) -> np.ndarray:
    """Strict base64 of a PNG (no whitespace, no URL-safe alphabet) → uint8 array [H, W, 3]."""
    if not isinstance(text, str):
        raise ImageError(f"expected base64 text, got {type(text).__name__}")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError(
            f"image is not valid base64 ({exc}); send standard base64 (A-Z a-z 0-9 + /, '=' padding, "
            "no line breaks) of the PNG bytes"
        ) from exc
    return decode_png(data, limits)


def _check_array(array) -> None:

    if not isinstance(array, np.ndarray) or array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        what = f"{array.dtype} array of shape {array.shape}" if isinstance(array, np.ndarray) else type(array)
        raise ImageError(f"expected a uint8 array of shape [H, W, 3], got {what}")


def encode_png(array: np.ndarray) -> bytes:
    """uint8 [H, W, 3] → PNG bytes; the same pixels always give the same bytes (no metadata)."""

    _check_array(array)
    buffer = io.BytesIO()
    Image.fromarray(array, mode="RGB").save(buffer, format="PNG", compress_level=6, optimize=False)
    return buffer.getvalue()


def png_b64(array: np.ndarray) -> str:
    """uint8 [H, W, 3] → base64 text of its PNG (what the feedback contract carries)."""
    return base64.b64encode(encode_png(array)).decode("ascii")


def _size(array) -> str:
    return f"{array.shape[1]}x{array.shape[0]}"


def check_pair(input_arr: np.ndarray, target_arr: np.ndarray) -> None:
    """ImageError unless the input and its target are RGB images of the same size."""
    _check_array(input_arr)
    _check_array(target_arr)
    if input_arr.shape != target_arr.shape:
        raise ImageError(
            f"input is {_size(input_arr)} but target is {_size(target_arr)}; "
            "a target must be the same size as the input"
        )


def sha256_hex(data: bytes) -> str:
    """The sha256 of ``data`` as 64 lowercase hex digits."""
    return hashlib.sha256(data).hexdigest()


class ImageStore(ABC):
    """Content-addressed PNG storage: the same bytes always get the same URI; ``put`` is idempotent."""

    @abstractmethod
    def put(self, png: bytes) -> str:
        """Store PNG bytes; return their URI."""

    @abstractmethod
    def get(self, uri: str) -> bytes:
        """The bytes at ``uri``, verified against the sha256 the URI names (ImageError if not)."""

    @abstractmethod
    def exists(self, uri: str) -> bool:
        """Whether ``uri`` is stored here."""

    @abstractmethod
    def delete(self, uri: str) -> bool:
        """Erase ``uri`` (erasure on request); True when it was there."""


class LocalImageStore(ImageStore):
    """PNGs at ``root/<first 2 hex>/<sha256>.png``; URIs are ``file://`` URIs of those files."""

    def __init__(self, root: Path | str):
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"LocalImageStore({str(self.root)!r})"

    def _path_of(self, digest: str) -> Path:
        return self.root / digest[:2] / f"{digest}.png"

    def _resolve(self, uri: str) -> tuple[Path, str]:
        """The file a URI names, checked to be one of this store's files, and its sha256."""
        if not isinstance(uri, str) or not uri.startswith("file://"):
            raise ImageError(
                f"{str(uri)[:80]!r} is not a file:// URI; use a URI returned by this store's put"
            )
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
            raise ImageError(f"{uri[:80]!r} is not a local file URI (file:///absolute/path)")
        path = Path(unquote(parts.path))
        digest = path.stem
        inside = path.is_absolute() and path.resolve().parent.parent == self.root
        if (
            not inside
            or path.suffix != ".png"
            or not _SHA256.fullmatch(digest)
            or path.parent.name != digest[:2]
        ):
            raise ImageError(
                f"{uri[:120]!r} is not an image of the store at {self.root}; "
                "use a URI returned by this store's put (or open the store that wrote it)"
            )
        return path, digest

    def put(self, png: bytes) -> str:
        png = bytes(png)
        if not png.startswith(PNG_MAGIC):
            raise ImageError("only PNG bytes can be stored (bad signature); encode the image with encode_png")
        digest = sha256_hex(png)
        path = self._path_of(digest)
        if path.is_file() and sha256_hex(path.read_bytes()) == digest:
            return path.as_uri()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{digest[:12]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(png)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)  # readers see no file or the whole file, never a partial one
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a power cut
        finally:
            os.close(dir_fd)
        return path.as_uri()

    def get(self, uri: str) -> bytes:
        path, digest = self._resolve(uri)
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise ImageError(
                f"no image at {uri[:120]}; it was never stored here, or was deleted (store {self.root})"
            ) from exc
        if sha256_hex(data) != digest:
            raise ImageError(
                f"image at {uri[:120]} is corrupted: its sha256 is {sha256_hex(data)[:12]}..., "
                f"not {digest[:12]}... as its name says; delete the file and put the image again"
            )
        return data

    def exists(self, uri: str) -> bool:
        path, _ = self._resolve(uri)
        return path.is_file()

    def delete(self, uri: str) -> bool:
        path, _ = self._resolve(uri)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True


def open_image_store(uri: str) -> ImageStore:
    """The image store at ``uri``: ``file:///abs/dir`` or a plain folder path (created on first put)."""
    if not isinstance(uri, str) or not uri.strip():
        raise ImageError("image store URI is empty; give a folder path or file:///absolute/folder")
    scheme = urlsplit(uri).scheme if "://" in uri else ""
    if scheme == "":
        return LocalImageStore(Path(uri))
    if scheme == "file":
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise ImageError(
                f"{uri!r} names host {parts.netloc!r}; a file URI needs three slashes: file:///absolute/folder"
            )
        return LocalImageStore(Path(unquote(parts.path)))
    raise ImageError(
        f"image store scheme {scheme!r} ({uri}) is not supported: only local folders (a path or file://) "
        "are supported in this build; production would plug in an object store (S3, GCS) implementing "
        "the same ImageStore interface (put/get/exists)"
    )
