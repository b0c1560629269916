"""The MicroFaaS function set, as real Python functions.

MicroFaaS (Byrne et al., Boston University PEAC lab; github.com/peaclab/MicroFaaS-worker
``workloads.py``) runs short CPU-bound functions taken from the FaaS workbench
(kmu-bigdata/serverless-faas-workbench): float_operations, cascading_sha256/md5,
matmul, linpack, html_generation, pyaes, zlib (de)compress, regex search/match,
file write, redis.  Here they are re-written from that list (not copied), keeping
the work each does; pyaes and redis are left out (no crypto library or database
on a bare node), JSON (de)serialisation and Pillow image resize are added, and
``sleep``/``spin`` exist to make jobs of a known length for experiments and tests.

Every function takes a dict of arguments and returns a JSON-serialisable value.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import random
import re
import time
import zlib
from typing import Any, Callable


def float_operations(args: dict) -> dict:
    n = int(args.get("n", 100_000))
    acc = 0.0
    for i in range(n):
        acc += math.sin(i) * math.cos(i) + math.sqrt(i)
    return {"n": n, "acc": acc}


def _cascade(algo: str, args: dict) -> str:
    digest = str(args.get("data", "edgelab")).encode()
    for _ in range(int(args.get("rounds", 10_000))):
        digest = hashlib.new(algo, digest).digest()
    return digest.hex()


def cascading_sha256(args: dict) -> str:
    return _cascade("sha256", args)


def cascading_md5(args: dict) -> str:
    return _cascade("md5", args)


def matmul(args: dict) -> dict:
    import numpy as np

    n = int(args.get("n", 128))
    rng = np.random.default_rng(int(args.get("seed", 0)))
    a, b = rng.random((n, n)), rng.random((n, n))
    c = a @ b
    return {"n": n, "trace": float(np.trace(c))}


def linpack(args: dict) -> dict:
    """Solve Ax=b; reports MFLOPS as LINPACK counts them (2/3 n^3 + 2 n^2)."""
    import numpy as np

    n = int(args.get("n", 200))
    rng = np.random.default_rng(int(args.get("seed", 0)))
    a = rng.random((n, n)) - 0.5
    b = a.sum(axis=1)
    t = time.perf_counter()
    x = np.linalg.solve(a, b)
    dt = max(time.perf_counter() - t, 1e-9)
    ops = 2.0 * n ** 3 / 3.0 + 2.0 * n ** 2
    return {"n": n, "mflops": ops / dt / 1e6, "residual": float(np.abs(x - 1.0).max())}


def html_generation(args: dict) -> dict:
    n = int(args.get("n", 1000))
    rnd = random.Random(int(args.get("seed", 0)))
    rows = []
    for _ in range(n):
        code = rnd.randrange(32, 127)
        rows.append(f"<tr><td>{chr(code)}</td><td>{code}</td></tr>")
    html = "<html><table><tr><th>Char</th><th>ASCII</th></tr>" + "".join(rows) + "</table></html>"
    return {"length": len(html), "sha256": hashlib.sha256(html.encode()).hexdigest()}


def zlib_compress(args: dict) -> dict:
    data = (str(args.get("data", "edgelab ")) * int(args.get("repeat", 10_000))).encode()
    comp = zlib.compress(data, int(args.get("level", 6)))
    return {"in": len(data), "out": len(comp), "data": base64.b64encode(comp).decode() if args.get("return_data") else None}


def zlib_decompress(args: dict) -> dict:
    raw = zlib.decompress(base64.b64decode(args["data"]))
    return {"length": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}


def regex_search(args: dict) -> Any:
    m = re.search(args.get("pattern", r"[0-9]{4}"), args.get("data", ""))
    return m.group(0) if m else None


def regex_match(args: dict) -> bool:
    return re.match(args.get("pattern", r"\w+"), args.get("data", "")) is not None


def json_roundtrip(args: dict) -> dict:
    n = int(args.get("n", 1000))
    doc = {"items": [{"id": i, "name": f"item{i}", "tags": ["a", "b"], "v": i * 0.5} for i in range(n)]}
    text = json.dumps(doc)
    back = json.loads(text)
    return {"bytes": len(text), "items": len(back["items"])}


def image_resize(args: dict) -> dict:
    """Resize a synthetic (seeded) RGB image with Pillow; optionally a given PNG/JPEG (base64)."""
    from PIL import Image

    if args.get("image_b64"):
        img = Image.open(io.BytesIO(base64.b64decode(args["image_b64"]))).convert("RGB")
    else:
        w, h = int(args.get("width", 640)), int(args.get("height", 480))
        rnd = random.Random(int(args.get("seed", 0)))
        img = Image.frombytes("RGB", (w, h), rnd.randbytes(w * h * 3))
    scale = float(args.get("scale", 0.5))
    out = img.resize((max(1, int(img.width * scale)), max(1, int(img.height * scale))), Image.BILINEAR)
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    return {"width": out.width, "height": out.height, "png_bytes": len(buf.getvalue())}


def sleep(args: dict) -> dict:
    s = float(args.get("seconds", 1.0))
    time.sleep(s)
    return {"slept": s}


def spin(args: dict) -> dict:
    """Busy-loop for ``seconds`` of wall time: a CPU-bound job of known length."""
    s = float(args.get("seconds", 1.0))
    end, n = time.perf_counter() + s, 0
    while time.perf_counter() < end:
        n += 1
    return {"iterations": n}


FUNCTIONS: dict[str, Callable[[dict], Any]] = {
    f.__name__: f for f in (float_operations, cascading_sha256, cascading_md5, matmul, linpack,
                            html_generation, zlib_compress, zlib_decompress, regex_search, regex_match,
                            json_roundtrip, image_resize, sleep, spin)
}
