"""Headless Chromium for the report test: the DOM after the page's script ran, a screenshot, its pixels.

Chromium comes from Debian's ``chromium`` package (``.ci/run`` installs it); tests skip, saying so,
where there is none. PNGs are decoded with the standard library (zlib + the PNG row filters), so no
imaging package is needed.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from collections import Counter
from pathlib import Path

ENABLE_HINT = "no Chromium on this machine: `apt-get install chromium` (Debian's package; .ci/run installs it)"


def find_chromium() -> str | None:
    return next((p for name in ("chromium", "chromium-browser") if (p := shutil.which(name))), None)


def _run(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        binary,
        "--headless",
        "--no-sandbox",  # root in CI containers
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--disable-extensions",
        # Nothing may come from the network: a page that needed it would render without it.
        "--proxy-server=127.0.0.1:9",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def dump_dom(binary: str, page: Path, profile: Path) -> str:
    """The page's DOM serialised after its scripts ran."""
    return _run(binary, profile, "--virtual-time-budget=5000", "--dump-dom", page.as_uri()).stdout


def screenshot(binary: str, page: Path, out: Path, profile: Path, *, width: int = 1280, height: int = 1600) -> Path:
    _run(
        binary,
        profile,
        "--virtual-time-budget=5000",
        "--force-device-scale-factor=0.5",  # fewer pixels to decode in pure Python
        f"--window-size={width},{height}",
        f"--screenshot={out}",
        page.as_uri(),
    )
    return out


def png_pixels(path: Path) -> Counter[tuple[int, int, int]]:
    """How many pixels of each RGB colour an 8-bit RGB or RGBA PNG holds."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, bytearray(), b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", header[:10])
    assert depth == 8, f"bit depth {depth}"
    assert color in (2, 6), f"colour type {color}"
    channels = 3 if color == 2 else 4
    stride = width * channels
    raw = zlib.decompress(bytes(idat))
    previous = bytearray(stride)
    colours: Counter[tuple[int, int, int]] = Counter()
    for row in range(height):
        start = row * (stride + 1)
        kind = raw[start]
        line = bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:
            for i in range(channels, stride):
                line[i] = (line[i] + line[i - channels]) & 0xFF
        elif kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, previous, strict=True))
        elif kind == 3:
            for i in range(stride):
                left = line[i - channels] if i >= channels else 0
                line[i] = (line[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = line[i - channels] if i >= channels else 0
                b = previous[i]
                c = previous[i - channels] if i >= channels else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        colours.update(zip(line[0::channels], line[1::channels], line[2::channels], strict=True))
        previous = line
    return colours
