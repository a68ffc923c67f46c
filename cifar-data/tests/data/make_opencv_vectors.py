#!/usr/bin/env python3
"""Known answers from real OpenCV for the seed's preprocessing and augmentation (SPEC "Data").

Writes three files next to this script, read by cifar-data/tests/opencv.rs:
  sharpen.bin         cv2.filter2D(img, -1, K), K the 5x5 unsharp mask, BORDER_REFLECT_101 (default)
  resize_area.bin     cv2.resize(crop, (32, 32), interpolation=cv2.INTER_AREA), enlarging a crop
  resize_nearest.bin  cv2.resize(grid, (32, 32), interpolation=cv2.INTER_NEAREST), the dropout mask

Run once (the outputs are committed):
  python3 -m venv .venv && .venv/bin/pip install opencv-python-headless numpy
  .venv/bin/python cifar-data/tests/data/make_opencv_vectors.py            # write
  .venv/bin/python cifar-data/tests/data/make_opencv_vectors.py --check    # compare with this OpenCV

`--check` recomputes every case with the OpenCV it runs under and reports whether the committed
outputs agree, so another OpenCV version (say 3.4.x, as in 2019) can be compared without rewriting.

File layout (all integers unsigned bytes unless said otherwise):
  b"CVKA", version length, OpenCV version (ASCII), case count (u16 little-endian), then per case:
  name length, name (ASCII), channels, in height, in width, out height, out width,
  [for resize_area only: crop top, crop left, i.e. where the input sits in a 32x32 image],
  input (channels, in height, in width) as planes (CHW), output (channels, out height, out width).
Images are built as OpenCV sees them, (H, W, C) interleaved, and transposed to planes only for
storage, so a 3-channel case is exactly what the seed's cv2 calls computed per channel.
"""

import struct
import sys
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
SIDE = 32
KERNEL = -np.array(
    [
        [1, 4, 6, 4, 1],
        [4, 16, 24, 16, 4],
        [6, 24, -476, 24, 6],
        [4, 16, 24, 16, 4],
        [1, 4, 6, 4, 1],
    ],
    dtype=np.float64,
) / 256.0


def planes(hwc):
    """(H, W, C) -> (C, H, W) bytes."""
    if hwc.ndim == 2:
        hwc = hwc[:, :, None]
    return np.ascontiguousarray(hwc.transpose(2, 0, 1)).tobytes()


def sharpen_cases(rng):
    cases = []

    def add(name, img):
        out = cv2.filter2D(img, -1, KERNEL)
        assert out.shape == img.shape and out.dtype == np.uint8
        cases.append((name, img, out, None))

    for i in range(3):
        add(f"random_{i}", rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8))
    add("flat_77", np.full((SIDE, SIDE, 3), 77, np.uint8))
    add("flat_0_255_128", np.dstack([np.full((SIDE, SIDE), v, np.uint8) for v in (0, 255, 128)]))
    # A checkerboard of 0 and 255 saturates both ends everywhere.
    y, x = np.mgrid[0:SIDE, 0:SIDE]
    board = np.where((x + y) % 2 == 0, 255, 0).astype(np.uint8)
    add("checkerboard", np.dstack([board, 255 - board, board]))
    # Bright and dark single pixels at the corners and edges: the reflected border in every
    # direction, and overshoot on a flat mid-grey background.
    spots = np.full((SIDE, SIDE, 3), 128, np.uint8)
    for (yy, xx), v in zip([(0, 0), (0, 31), (31, 0), (31, 31), (1, 15), (15, 30)],
                           [255, 0, 250, 3, 255, 0]):
        spots[yy, xx, :] = v
    add("corner_spots", spots)
    # A smooth ramp with noise: mostly unsaturated values, many exact halves.
    ramp = (x * 4 + y * 3).astype(np.int32)
    noisy = np.clip(ramp[:, :, None] + rng.integers(-20, 21, (SIDE, SIDE, 3)), 0, 255)
    add("ramp_noise", noisy.astype(np.uint8))
    # Images smaller than the kernel: the border reflects more than once.
    for h, w in [(1, 1), (1, 6), (2, 3), (3, 2), (4, 4), (5, 7), (7, 5), (6, 1)]:
        add(f"small_{h}x{w}", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return cases


def resize_area_cases(rng):
    """Every source height and width 8..=32 once (paired in a shuffled order), plus edge cases."""
    cases = []
    heights = list(range(SIDE - 24, SIDE + 1))
    widths = list(rng.permutation(heights))
    pairs = list(zip(heights, widths)) + [(20, 32), (32, 20), (8, 8), (31, 31), (32, 31)]
    for i, (h, w) in enumerate(pairs):
        h, w = int(h), int(w)
        channels = 3 if i % 4 == 0 else 1
        crop = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
        if i == 1:
            crop[:] = np.where(rng.random((h, w, channels)) < 0.5, 0, 255)  # hard edges
        out = cv2.resize(np.squeeze(crop, 2) if channels == 1 else crop, (SIDE, SIDE),
                         interpolation=cv2.INTER_AREA)
        top = int(rng.integers(0, SIDE - h + 1))
        left = int(rng.integers(0, SIDE - w + 1))
        cases.append((f"area_{h}x{w}", crop, out, (top, left)))
    return cases


def resize_nearest_cases(rng):
    cases = []
    for h in range(4, 8):
        for w in range(4, 8):
            grid = rng.integers(0, 2, (h, w), dtype=np.uint8)
            out = cv2.resize(grid, (SIDE, SIDE), interpolation=cv2.INTER_NEAREST)
            cases.append((f"nearest_{h}x{w}", grid, out, None))
    return cases


def encode(cases):
    version = cv2.__version__.encode()
    blob = bytearray(b"CVKA" + bytes([len(version)]) + version + struct.pack("<H", len(cases)))
    for name, img, out, at in cases:
        img3 = img if img.ndim == 3 else img[:, :, None]
        out3 = out if out.ndim == 3 else out[:, :, None]
        blob += bytes([len(name)]) + name.encode()
        blob += bytes([img3.shape[2], img3.shape[0], img3.shape[1], out3.shape[0], out3.shape[1]])
        if at is not None:
            blob += bytes(at)
        blob += planes(img3) + planes(out3)
    return bytes(blob)


def main():
    check = "--check" in sys.argv[1:]
    makers = {
        "sharpen.bin": sharpen_cases,
        "resize_area.bin": resize_area_cases,
        "resize_nearest.bin": resize_nearest_cases,
    }
    ok = True
    for seed, (file, make) in enumerate(makers.items()):
        cases = make(np.random.default_rng(1000 + seed))
        blob = encode(cases)
        path = HERE / file
        if check:
            old = path.read_bytes()
            # Skip the version string: only the cases have to agree.
            same = old[5 + old[4]:] == blob[5 + blob[4]:]
            print(f"{file}: OpenCV {cv2.__version__} {'agrees' if same else 'DIFFERS'}")
            ok &= same
        else:
            path.write_bytes(blob)
            print(f"{file}: {len(cases)} cases, {len(blob)} bytes, OpenCV {cv2.__version__}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
