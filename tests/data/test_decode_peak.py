"""A large picture in another mode than L or RGB (RGBA, 16-bit, ...) is cut, converted and
box-reduced band by band for a thumbnail (issue #27, round three): the same pixels as one
whole conversion, without the full-size converted copies (a 7000×7000 RGBA PNG peaked 398 MB
above the process, now about 207 MB: its own decoded pixels and little more)."""

import io
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from flowlib.data.sources import images
from flowlib.env import REPO_ROOT


def _pictures(rng, shape=(131, 157)) -> dict[str, Image.Image]:
    pictures = {
        "RGBA": Image.fromarray(rng.integers(0, 256, (*shape, 4)).astype(np.uint8), "RGBA"),
        "LA": Image.fromarray(rng.integers(0, 256, (*shape, 4)).astype(np.uint8), "RGBA").convert("LA"),
        "I;16": Image.fromarray(rng.integers(0, 65536, shape).astype(np.uint16)),
        "F": Image.fromarray((rng.random(shape) * 300).astype(np.float32)),
        "CMYK": Image.fromarray(rng.integers(0, 256, (*shape, 4)).astype(np.uint8), "RGBA").convert("CMYK"),
    }
    pictures["F"].putpixel((150, 120), 299.9)   # the largest value, outside the centre square
    palette = Image.fromarray(rng.integers(0, 256, (*shape, 3)).astype(np.uint8), "RGB").quantize(16)
    palette.info["transparency"] = 3
    pictures["P"] = palette
    return pictures


@pytest.mark.parametrize("size,channels,crop", [(8, 1, None), (8, 3, None), (16, 3, 100), (12, 1, 77),
                                                (64, 3, None)])
def test_the_banded_thumbnail_has_exactly_the_pixels_of_one_whole_conversion(monkeypatch, size, channels, crop):
    for name, img in _pictures(np.random.default_rng(size)).items():
        whole = images._square_thumbnail(images.to_plain_mode(img), img.width, size, channels, crop)
        monkeypatch.setattr(images, "BAND_PIXELS", 700)             # a few rows per band
        banded = images._banded_thumbnail(img, img.width, size, channels, crop)
        monkeypatch.undo()
        assert banded.shape == whole.shape == (channels, size, size), name
        assert banded.dtype == np.uint8 and np.array_equal(banded, whole), (name, size, channels, crop)


def test_decode_picture_takes_the_banded_way_for_a_large_rgba_file(monkeypatch):
    img = _pictures(np.random.default_rng(1))["RGBA"]
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    expected = images._square_thumbnail(images.to_plain_mode(img), img.width, 8, 1, None)
    monkeypatch.setattr(images, "BAND_PIXELS", 700)
    monkeypatch.setattr(images, "to_plain_mode", lambda img: pytest.fail("a full-size conversion"))
    assert np.array_equal(images.decode_picture(io.BytesIO(buf.getvalue()), 8, 1, None), expected)


MAKE = textwrap.dedent("""
    import sys
    import numpy as np
    from PIL import Image
    side = 7000
    a = np.empty((side, side, 4), np.uint8)
    ramp = (np.arange(side) % 256).astype(np.uint8)
    a[..., 0] = ramp[None, :]; a[..., 1] = ramp[:, None]; a[..., 2] = 90; a[..., 3] = ramp[None, ::-1]
    Image.fromarray(a, "RGBA").save(sys.argv[1], compress_level=1)
""")

MEASURE = textwrap.dedent("""
    import io, resource, sys
    from flowlib.data.sources.images import decode_picture
    data = open(sys.argv[1], "rb").read()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    pixels = decode_picture(io.BytesIO(data), 32, 1, None)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert pixels.shape == (1, 32, 32)
    print((after - before) // 1024)
""")


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux")
def test_decoding_a_7000_pixel_rgba_png_for_a_thumbnail_stays_near_its_own_pixels(tmp_path):
    png = tmp_path / "rgba.png"
    subprocess.run([sys.executable, "-c", MAKE, str(png)], check=True, timeout=120)
    out = subprocess.run([sys.executable, "-c", MEASURE, str(png)], check=True, timeout=120, cwd=REPO_ROOT,
                         capture_output=True, text=True, env={"PYTHONPATH": str(REPO_ROOT), "PATH": ""})
    delta_mb = int(out.stdout.strip().splitlines()[-1])
    # 7000×7000 RGBA is 196 MB as decoded; the whole conversion added 147 MB (RGB) + 49 MB (L).
    assert delta_mb < 290, f"decoding took the process {delta_mb} MB above where it was"
