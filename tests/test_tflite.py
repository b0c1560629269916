"""LiteRT BlazeFace detection: anchors, decoding, weighted NMS, a real face on a real photograph,
and the pixel bound (413) of the phone service's decoder."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest
import requests

from edgelab.services.phone.detect import MAX_PIXELS, ImageTooLarge, decode
from edgelab.services.phone.tflite import (ANCHORS, Detection, decode as decode_raw, iou, ssd_anchors,
                                           weighted_nms)

from svhelpers import service, url_of
from test_phone import HOPPER, png_without_face

litert = pytest.importorskip("ai_edge_litert.interpreter", reason="pip install -r requirements.txt (ai-edge-litert)")


def test_ssd_anchors_match_blazeface_short_range():
    a = ssd_anchors()
    assert a.shape == (896, 2) and ANCHORS.shape == (896, 2)
    # stride 8: 16x16 cells, 2 anchors each; first cell centre (0.5/16, 0.5/16)
    assert np.allclose(a[0], [1 / 32, 1 / 32]) and np.allclose(a[1], a[0])
    assert np.allclose(a[2], [3 / 32, 1 / 32])
    assert np.allclose(a[511], [31 / 32, 31 / 32])
    # strides 16,16,16 merged: 8x8 cells, 6 anchors each
    assert np.allclose(a[512:518], [[1 / 16, 1 / 16]] * 6) and np.allclose(a[518], [3 / 16, 1 / 16])
    assert np.allclose(a[-1], [15 / 16, 15 / 16])


def test_decode_uses_the_anchor_the_scale_and_the_sigmoid():
    raw = np.zeros((896, 16), dtype=np.float32)
    logits = np.full((896, 1), -10.0, dtype=np.float32)
    i = 512 + 6 * 2                             # third cell of the 8x8 grid: anchor (5/16, 1/16)
    raw[i, :4] = [12.8, -6.4, 32.0, 64.0]       # dx=+0.1, dy=-0.05, w=0.25, h=0.5 of the input
    raw[i, 4:6] = [0.0, 12.8]                   # first keypoint: anchor + (0, 0.1)
    logits[i] = 2.0
    logits[7] = 0.1                             # sigmoid 0.525: kept at 0.5, dropped at 0.6
    dets = decode_raw(raw, logits)
    assert len(dets) == 2
    d = max(dets, key=lambda d: d.score)
    assert d.score == pytest.approx(1 / (1 + np.exp(-2.0)), rel=1e-6)
    cx, cy = 5 / 16 + 0.1, 1 / 16 - 0.05
    assert (d.xmin, d.ymin, d.xmax, d.ymax) == pytest.approx((cx - 0.125, cy - 0.25, cx + 0.125, cy + 0.25), abs=1e-6)
    assert d.keypoints[0] == pytest.approx((5 / 16, 1 / 16 + 0.1), abs=1e-6)
    assert len(decode_raw(raw, logits, min_score=0.6)) == 1
    big = np.full((896, 1), 1e6, dtype=np.float32)         # clipped at 100: no overflow, score 1
    assert all(x.score == 1.0 for x in decode_raw(raw, big))


def test_weighted_nms_merges_overlaps_and_keeps_separate_faces():
    a = Detection(0.9, 0.10, 0.10, 0.30, 0.30, ((0.2, 0.2),))
    b = Detection(0.6, 0.12, 0.12, 0.32, 0.32, ((0.3, 0.3),))   # IoU with a ~0.67
    c = Detection(0.8, 0.60, 0.60, 0.80, 0.80, ((0.7, 0.7),))   # elsewhere
    assert iou(a, b) > 0.3 and iou(a, c) == 0.0
    out = weighted_nms([b, c, a])
    assert [round(d.score, 2) for d in out] == [0.9, 0.8]
    merged = out[0]
    assert merged.xmin == pytest.approx((0.9 * 0.10 + 0.6 * 0.12) / 1.5)
    assert merged.keypoints[0][0] == pytest.approx((0.9 * 0.2 + 0.6 * 0.3) / 1.5)
    assert (out[1].xmin, out[1].ymin, out[1].xmax, out[1].ymax) == pytest.approx((0.6, 0.6, 0.8, 0.8))
    assert weighted_nms([]) == []


@pytest.fixture(scope="module")
def phone_url():
    with service("edgelab.services.phone", "--port", "0") as (_, line):
        yield url_of(line)


def test_litert_finds_the_face_in_a_real_photograph(phone_url):
    r = requests.post(phone_url + "/detect?mode=tflite", data=HOPPER, timeout=60)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["mode"] == "tflite" and (out["width"], out["height"]) == (512, 600)
    assert len(out["detections"]) == 1
    f = out["detections"][0]
    assert f["score"] > 0.8
    # the Haar cascade (an independent detector) finds the same head
    haar = requests.post(phone_url + "/detect?mode=faces", data=HOPPER, timeout=60).json()["detections"][0]
    ix = max(0, min(f["x"] + f["w"], haar["x"] + haar["w"]) - max(f["x"], haar["x"]))
    iy = max(0, min(f["y"] + f["h"], haar["y"] + haar["h"]) - max(f["y"], haar["y"]))
    assert ix * iy / (f["w"] * f["h"] + haar["w"] * haar["h"] - ix * iy) > 0.4
    # eyes (keypoints 0, 1) inside the box, in its upper half, left of each other
    (rx, ry), (lx, ly) = f["keypoints"][:2]
    assert f["x"] < rx < lx < f["x"] + f["w"] and f["y"] < ry < f["y"] + f["h"] / 2 + 20
    assert out["cpu_ms"] > 0 and out["compute_ms"] >= out["cpu_ms"] * 0.5
    none = requests.post(phone_url + "/detect?mode=tflite", data=png_without_face(), timeout=60).json()
    assert none["detections"] == []


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height (a few hundred bytes: a decompression bomb's shape)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + 3 * width), 9)        # one row; the rest would be zeros
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def test_decoder_refuses_too_many_pixels_before_decoding(phone_url):
    bomb = png_header_only(15000, 15000)
    assert len(bomb) < 50_000
    with pytest.raises(ImageTooLarge):
        decode(bomb)
    with pytest.raises(ImageTooLarge):
        decode(png_header_only(6000, 4001))                   # just over 24 MP
    ok = cv2.imencode(".png", np.zeros((4, 5, 3), np.uint8))[1].tobytes()
    assert decode(ok).shape == (4, 5, 3) and MAX_PIXELS == 24_000_000
    for mode in ("tflite", "faces", "gray"):
        r = requests.post(phone_url + f"/detect?mode={mode}", data=bomb, timeout=30)
        assert r.status_code == 413 and "pixels" in r.json()["error"], r.text
    assert requests.get(phone_url + "/healthz", timeout=5).json()["ok"] is True
