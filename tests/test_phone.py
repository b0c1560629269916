"""Phone workload service: real face detection on a shipped photo, gray mode, bad input."""

from __future__ import annotations

import io

import matplotlib.cbook as cbook
import pytest
import requests
from PIL import Image, ImageDraw

from svhelpers import service, url_of

# Grace Hopper portrait shipped with matplotlib (mpl-data/sample_data): a real face, no download.
HOPPER = open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), "rb").read()


def png_without_face() -> bytes:
    img = Image.new("RGB", (320, 240), (30, 120, 200))
    d = ImageDraw.Draw(img)
    d.rectangle((40, 40, 140, 120), fill=(250, 250, 0))
    d.ellipse((180, 60, 300, 200), fill=(0, 200, 0))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def phone_url():
    with service("edgelab.services.phone", "--port", "0") as (_, line):
        yield url_of(line)


def test_detects_the_face_in_a_portrait(phone_url):
    r = requests.post(phone_url + "/detect?mode=faces", data=HOPPER, headers={"Content-Type": "image/jpeg"}, timeout=30)
    assert r.status_code == 200
    out = r.json()
    assert (out["width"], out["height"]) == (512, 600)
    assert len(out["detections"]) == 1
    f = out["detections"][0]
    assert f["label"] == "face"
    cx, cy = f["x"] + f["w"] / 2, f["y"] + f["h"] / 2
    assert 150 < cx < 380 and 100 < cy < 350 and 120 < f["w"] < 350   # head region of the portrait
    assert out["compute_ms"] > 0
    # downscaled processing still reports boxes in original pixels
    small = requests.post(phone_url + "/detect?mode=faces&max_side=300", data=HOPPER, timeout=30).json()
    assert len(small["detections"]) == 1
    assert abs(small["detections"][0]["x"] - f["x"]) < 40


def test_no_face_in_shapes_and_gray_mode(phone_url):
    png = png_without_face()
    out = requests.post(phone_url + "/detect", data=png, headers={"Content-Type": "image/png"}, timeout=30).json()
    assert out["detections"] == [] and out["width"] == 320
    g = requests.post(phone_url + "/detect?mode=gray&max_side=80", data=png, timeout=30).json()
    assert (g["out_width"], g["out_height"]) == (80, 60)
    assert 0 < g["mean"] < 255


def test_bad_input_is_a_400_and_service_survives(phone_url):
    r = requests.post(phone_url + "/detect", data=b"definitely not an image", timeout=30)
    assert r.status_code == 400 and "not a JPEG/PNG" in r.json()["error"]
    r = requests.post(phone_url + "/detect?mode=cats", data=HOPPER, timeout=30)
    assert r.status_code == 400 and "unknown detector" in r.json()["error"]
    assert requests.get(phone_url + "/healthz", timeout=5).json()["ok"] is True
