"""What hostile picture uploads cost: peak memory, time and disk of the Train page's data path.

Each probe builds its input in a temporary folder and runs, in a child process of its own
under an address-space limit, what the Train page does with an uploaded zip:
``store_upload`` then ``load_images("folder", split)`` for both splits (the page's preview;
the trainer does the same again). The child's peak resident memory comes from ``wait4``.

    python -m benchmarks.upload_probes                 # every probe
    python -m benchmarks.upload_probes tiny quota      # some of them

Probes:

``tiny``   a 17 MB zip of 110,000 1×1 PNGs, read at 64×64 RGB (the decoded pixels are 80× the zip)
``big``    a 4.5 MB zip holding one 7000×7000 16-bit PNG, classroom mode, 32×32 grey
``rgba``   the same with a 7000×7000 RGBA PNG
``quota``  four 2.3 MB zips of tiny PNGs, each read at 64×64 RGB, with a 5 MB upload quota:
           what stays on disk afterwards (uploads and decoded caches)

Numbers live in benchmarks/RESULTS.md; run it under the machine's CPU lock, as every probe here.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ADDRESS_SPACE_LIMIT = 9 * 1024**3  # a probe that goes wild stops here, not at the machine's RAM


def _tiny_png_zip(path: Path, count: int, seed: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(count):
            buf = io.BytesIO()
            Image.new("RGB", (1, 1), tuple(int(v) for v in rng.integers(0, 256, 3))).save(buf, "PNG")
            zf.writestr(f"p{i:06d}.png", buf.getvalue())


def _big_picture_zip(path: Path, mode: str, target_bytes: int) -> None:
    """One 7000×7000 picture whose noisy corner makes the zip about ``target_bytes``."""
    from PIL import Image

    side = 7000
    rng = np.random.default_rng(0)
    if mode == "I;16":
        pixels = np.zeros((side, side), np.uint16)
        noise = int((target_bytes / 2) ** 0.5)
        pixels[:noise, :noise] = rng.integers(0, 65536, (noise, noise))
        img = Image.fromarray(pixels)
    else:
        pixels = np.zeros((side, side, 4), np.uint8)
        noise = int((target_bytes / 4) ** 0.5)
        pixels[:noise, :noise] = rng.integers(0, 256, (noise, noise, 4))
        img = Image.fromarray(pixels, "RGBA")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("photo.png", buf.getvalue())


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def child(spec: dict) -> dict:
    """Run in the child: store each upload and read both splits, as the Train page does."""
    from flowlib.data import DatasetError, cache_dir, load_images, store_upload

    outcomes = []
    started = time.monotonic()
    for zip_path in spec["zips"]:
        try:
            stored = store_upload(Path(zip_path).name, Path(zip_path).read_bytes())
            counts = [len(load_images("folder", split, path=stored, size=spec["size"],
                                      channels=spec["channels"])) for split in ("train", "test")]
            outcomes.append(f"loaded {counts[0]:,} + {counts[1]:,} pictures")
        except DatasetError as exc:
            outcomes.append(f"refused: {str(exc)[:160]}")
        except MemoryError:
            outcomes.append("MemoryError")
    return {"seconds": round(time.monotonic() - started, 2), "outcomes": outcomes,
            "uploads_and_caches_mb": round(_folder_bytes(cache_dir()) / 1024**2, 1)}


def run_probe(name: str, work: Path) -> dict:
    env = dict(os.environ, FLOWLAB_CACHE_DIR=str(work / f"cache-{name}"), PYTHONPATH=str(ROOT))
    for var in ("FLOWLAB_CLASSROOM", "FLOWLAB_UPLOAD_QUOTA_MB", "FLOWLAB_DECODE_BUDGET_MPX",
                "FLOWLAB_DECODE_BUDGET_SECONDS"):
        env.pop(var, None)
    if name == "tiny":
        zips = [work / "tiny.zip"]
        _tiny_png_zip(zips[0], 110_000, seed=0)
        spec = {"size": 64, "channels": 3}
    elif name in ("big", "rgba"):
        zips = [work / f"{name}.zip"]
        _big_picture_zip(zips[0], "I;16" if name == "big" else "RGBA", int(4.5 * 1024**2))
        env["FLOWLAB_CLASSROOM"] = "1"
        spec = {"size": 32, "channels": 1}
    elif name == "quota":
        zips = [work / f"quota{i}.zip" for i in range(4)]
        for i, path in enumerate(zips):
            _tiny_png_zip(path, 14_400, seed=i + 1)
        env["FLOWLAB_UPLOAD_QUOTA_MB"] = "5"
        spec = {"size": 64, "channels": 3}
    else:
        raise SystemExit(f"unknown probe {name!r}")
    spec["zips"] = [str(p) for p in zips]
    code = ("import json, resource, sys; "
            f"resource.setrlimit(resource.RLIMIT_AS, ({ADDRESS_SPACE_LIMIT}, {ADDRESS_SPACE_LIMIT})); "
            "from benchmarks.upload_probes import child; "
            "print(json.dumps(child(json.loads(sys.argv[1]))))")
    out_path, err_path = work / f"{name}.out", work / f"{name}.err"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        process = subprocess.Popen([sys.executable, "-c", code, json.dumps(spec)], env=env, cwd=ROOT,
                                   stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own peak, not all children's
    lines = out_path.read_text().strip().splitlines()
    result = json.loads(lines[-1]) if status == 0 and lines else {
        "error": f"exit status {status}: " + err_path.read_text().strip()[-400:]}
    result.update(probe=name, zip_mb=round(sum(p.stat().st_size for p in zips) / 1024**2, 1),
                  peak_rss_mb=round(usage.ru_maxrss / 1024))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("probes", nargs="*", default=["tiny", "big", "rgba", "quota"])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="upload-probes-") as tmp:
        for name in args.probes:
            print(json.dumps(run_probe(name, Path(tmp))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
