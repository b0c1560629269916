"""Phone workload: image detection service (OpenCV Haar cascades) and a cheap grayscale mode.

Run: ``python -m edgelab.services.phone --bind 0.0.0.0 --port 8080``.
"""

from .detect import CASCADES, ImageError, detect, grayscale
from .server import make_server

__all__ = ["CASCADES", "ImageError", "detect", "grayscale", "make_server"]
