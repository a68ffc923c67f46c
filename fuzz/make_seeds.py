#!/usr/bin/env python3
"""Writes the small seed corpora in fuzz/seeds/<target>/ (committed; rerun only to change them).

Standard library only, deterministic (fixed random seed, zero timestamps):
  python3 fuzz/make_seeds.py
"""

import gzip
import io
import random
import shutil
import tarfile
from pathlib import Path

SEEDS = Path(__file__).resolve().parent / "seeds"
PIXELS = 3072
rng = random.Random(7)


def pixels():
    return bytes(rng.randrange(256) for _ in range(PIXELS))


def write(target, name, data):
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def records():
    one = bytes([3, 42]) + pixels()
    write("cifar100_records", "one_record", one)
    write("cifar100_records", "two_records", one + bytes([19, 99]) + pixels())
    write("cifar100_records", "bad_fine_label", bytes([3, 100]) + pixels())
    write("cifar100_records", "bad_coarse_label", bytes([20, 0]) + pixels())
    write("cifar100_records", "truncated", one[:1000])
    write("cifar10_records", "one_record", bytes([9]) + pixels())
    write("cifar10_records", "two_records", bytes([0]) + pixels() + bytes([5]) + pixels())
    write("cifar10_records", "bad_label", bytes([10]) + pixels())
    write("cifar10_records", "cifar100_sized", bytes([1, 2]) + pixels())


def label_names():
    cifar10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck"]
    write("label_names", "cifar10_meta", ("\n".join(cifar10) + "\n\n").encode())
    write("label_names", "crlf", ("\r\n".join(cifar10) + "\r\n").encode())
    write("label_names", "coarse_20", "\n".join(f"superclass_{i}" for i in range(20)).encode())
    write("label_names", "fine_100", ("\n".join(f"class_{i}" for i in range(100)) + "\n").encode())
    write("label_names", "not_utf8", b"apple\n\xff\xfe\nbee\n")
    write("label_names", "blank_lines", b"\n \n\t\na\n\n")


def tar_gz(entries, fmt=tarfile.GNU_FORMAT, compress=True):
    """entries: (name, type, data or link target). Uncompressed, the harness gzips it itself."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mtime = 0
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = payload
                tar.addfile(info)
            elif kind == tarfile.REGTYPE:
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            else:
                tar.addfile(info)
    return gzip.compress(buf.getvalue(), mtime=0) if compress else buf.getvalue()


def archives():
    d = ("cifar-100-binary", tarfile.DIRTYPE, None)
    files = [
        ("cifar-100-binary/train.bin", tarfile.REGTYPE, bytes([1, 2]) + bytes(PIXELS)),
        ("cifar-100-binary/test.bin", tarfile.REGTYPE, bytes([0, 0]) + bytes(PIXELS)),
        ("cifar-100-binary/fine_label_names.txt", tarfile.REGTYPE, b"a\nb\n"),
        ("cifar-100-binary/coarse_label_names.txt", tarfile.REGTYPE, b"x\ny\n"),
    ]
    write("archive", "dataset", tar_gz([d] + files))
    write("archive", "dataset_pax", tar_gz([d] + files, tarfile.PAX_FORMAT))
    long = "cifar-100-binary/" + "n" * 120 + ".txt"
    write("archive", "long_name", tar_gz([d, (long, tarfile.REGTYPE, b"long")]))
    write("archive", "symlink", tar_gz([d, ("cifar-100-binary/l", tarfile.SYMTYPE, "/etc")]))
    write("archive", "hardlink", tar_gz([d] + files[:1] +
                                        [("cifar-100-binary/h", tarfile.LNKTYPE,
                                          "cifar-100-binary/train.bin")]))
    write("archive", "parent", tar_gz([("../escape.txt", tarfile.REGTYPE, b"x")]))
    write("archive", "duplicate", tar_gz([d] + files[:1] + files[:1]))
    write("archive", "fifo", tar_gz([("cifar-100-binary/p", tarfile.FIFOTYPE, None)]))
    # Plain tars: the harness gzips input that lacks the gzip magic, so mutations hit the headers.
    small = [("cifar-100-binary/a.txt", tarfile.REGTYPE, b"a\nb\n"),
             ("cifar-100-binary/b.bin", tarfile.REGTYPE, bytes(range(40)))]
    write("archive", "plain_tar", tar_gz([d] + small, compress=False))
    write("archive", "plain_tar_pax", tar_gz([d] + small, tarfile.PAX_FORMAT, compress=False))
    write("archive", "plain_tar_links", tar_gz(
        [d] + small[:1] + [("cifar-100-binary/s", tarfile.SYMTYPE, "a.txt"),
                           ("cifar-100-binary/h", tarfile.LNKTYPE, "cifar-100-binary/a.txt")],
        compress=False))


if __name__ == "__main__":
    shutil.rmtree(SEEDS, ignore_errors=True)
    records()
    label_names()
    archives()
    for d in sorted(SEEDS.iterdir()):
        sizes = sorted(f.stat().st_size for f in d.iterdir())
        print(f"{d.name}: {len(sizes)} seeds, {sum(sizes)} bytes")
