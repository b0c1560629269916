"""Image work a phone node does: LiteRT (BlazeFace) or Haar-cascade face detection, or a cheap resize+grayscale.

The cascade is OpenCV's pre-trained ``haarcascade_frontalface_default.xml`` shipped
inside the ``opencv-python-headless`` wheel (``cv2.data.haarcascades``): real
computation on a real model, with no download at run time.
"""

from __future__ import annotations

import threading
from typing import Optional

import cv2
import numpy as np

CASCADES = {
    "faces": "haarcascade_frontalface_default.xml",
    "eyes": "haarcascade_eye.xml",
    "bodies": "haarcascade_fullbody.xml",
}
_local = threading.local()   # CascadeClassifier is not safe to share across threads


#: Largest image decoded, in pixels (24 MP: a 6000x4000 photograph, ~72 MB once decoded as BGR).
#: A 219 kB PNG can declare 15000x15000 pixels and would take 675 MB to decode: refuse it first.
MAX_PIXELS = 24_000_000


class ImageError(ValueError):
    """The request body is not a decodable JPEG/PNG image."""


class ImageTooLarge(ImageError):
    """The image declares more pixels than the service decodes (HTTP 413)."""


def _cascade(kind: str) -> cv2.CascadeClassifier:
    cache = getattr(_local, "cascades", None)
    if cache is None:
        cache = _local.cascades = {}
    if kind not in cache:
        if kind not in CASCADES:
            raise ValueError(f"unknown detector {kind!r}; use one of {', '.join(CASCADES)}")
        c = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADES[kind])
        if c.empty():
            raise RuntimeError(f"OpenCV could not load {CASCADES[kind]} from {cv2.data.haarcascades}")
        cache[kind] = c
    return cache[kind]


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the image header alone (Pillow reads no pixel data here)."""
    from io import BytesIO

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(BytesIO(data)) as im:
            return im.size
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageError(f"body of {len(data)} bytes is not a JPEG/PNG image ({exc})") from None
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"image declares more than {MAX_PIXELS} pixels") from None


def decode(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode a JPEG/PNG, refusing (before decoding) one larger than ``max_pixels``."""
    if data:
        w, h = image_size(data)
        if w * h > max_pixels:
            raise ImageTooLarge(f"image of {w}x{h} = {w * h} pixels exceeds the limit of {max_pixels} pixels; "
                                "send a smaller image")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if img is None:
        raise ImageError(f"body of {len(data)} bytes is not a JPEG/PNG image")
    return img


def _limit(img: np.ndarray, max_side: Optional[int]) -> tuple[np.ndarray, float]:
    h, w = img.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return img, 1.0
    scale = max_side / max(h, w)
    return cv2.resize(img, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA), scale


def detect(data: bytes, kind: str = "faces", max_side: Optional[int] = 640, min_size: int = 24) -> dict:
    """Detections in original-image pixel coordinates."""
    img = decode(data)
    small, scale = _limit(img, max_side)
    gray = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY))
    boxes = _cascade(kind).detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_size, min_size))
    dets = [{"label": kind.rstrip("s") if kind != "bodies" else "body",
             "x": int(x / scale), "y": int(y / scale), "w": int(w / scale), "h": int(h / scale)}
            for (x, y, w, h) in (boxes if len(boxes) else [])]
    return {"mode": kind, "width": int(img.shape[1]), "height": int(img.shape[0]), "detections": dets}


def tflite(data: bytes) -> dict:
    """Faces found by the LiteRT BlazeFace model (see :mod:`.tflite`)."""
    from .tflite import detect_faces

    img = decode(data)
    return {"mode": "tflite", "width": int(img.shape[1]), "height": int(img.shape[0]),
            "detections": detect_faces(img)}


def grayscale(data: bytes, max_side: Optional[int] = 160) -> dict:
    """Low-power mode: decode, downscale, grayscale; returns size and mean brightness."""
    img = decode(data)
    small, _ = _limit(img, max_side)
    gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    return {"mode": "gray", "width": int(img.shape[1]), "height": int(img.shape[0]),
            "out_width": int(gray.shape[1]), "out_height": int(gray.shape[0]), "mean": float(gray.mean())}
