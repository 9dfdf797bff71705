"""A synthetic CIFAR-100 in the genuine python-version format (pickles, tar.gz) for the demo and tests."""

from __future__ import annotations

import gzip
import io
import logging
import os
import pickle
import struct
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from repshift.data.cifar import (
    CIFAR100_DIR,
    COARSE_LABEL_NAMES,
    COARSE_OF_FINE,
    FINE_LABEL_NAMES,
    IMAGE_SIDE,
    N_PIXELS,
)
from repshift.data.coco import _stable_int
from repshift.formats.atomic import atomic_dir, atomic_path

log = logging.getLogger(__name__)


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler, whose dispatch table can be extended
    """Protocol 2 as Python 2's cPickle writes it: ``str``/``bytes`` as byte strings, numpy under numpy.core."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj: bytes | str) -> None:
        raw = obj if isinstance(obj, bytes) else obj.encode("latin-1")
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_py2_str

    def save_global(self, obj: Any, name: str | None = None) -> None:
        module = getattr(obj, "__module__", "")
        if module == "numpy._core.multiarray":  # Python 2 era numpy lived at numpy.core
            self.write(pickle.GLOBAL + f"numpy.core.multiarray\n{name or obj.__name__}\n".encode())
            self.memoize(obj)
            return
        super().save_global(obj, name)


def _py2_pickle(obj: Any, path: Path) -> None:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def _fake_images(labels_N: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Class-dependent pictures: a class colour, stripes of a class-dependent period and direction, noise."""
    n = labels_N.size
    palette = np.random.default_rng(12345).integers(30, 226, size=(len(FINE_LABEL_NAMES), 3))
    yy, xx = np.mgrid[0:IMAGE_SIDE, 0:IMAGE_SIDE]
    out = np.empty((n, IMAGE_SIDE, IMAGE_SIDE, 3), dtype=np.uint8)
    for i, k in enumerate(labels_N):
        period = 2 + k % 7
        coord = yy if (k // 7) % 2 == 0 else xx
        stripes = np.where((coord // period) % 2 == 0, 25.0, -25.0)[..., None]
        noise = rng.normal(0.0, 12.0, size=(IMAGE_SIDE, IMAGE_SIDE, 3))
        out[i] = np.clip(palette[k] + stripes + noise, 0, 255).astype(np.uint8)
    return out


def make_fake_cifar100(
    root: str | os.PathLike,
    *,
    n_train: int = 500,
    n_test: int = 100,
    n_classes: int = 100,
    seed: int = 0,
) -> Path:
    """Write ``root/cifar-100-python/{train,test,meta}`` in the genuine format; for tests and the demo.

    Same pickle structure as the official files (Python 2 protocol-2 pickles, byte-string keys and names, a
    uint8 N x 3072 ``data`` array in R, G, B planes, ``fine_labels``/``coarse_labels`` int lists,
    ``filenames``, ``batch_label``), with the real 100 class names, 20 superclass names and class-to-superclass
    map. Fine labels ``0..n_classes-1`` are used, spread evenly and shuffled; each class gets its own colour
    and stripe pattern so that a probe can tell classes apart. Deterministic from ``seed``. Returns the folder.
    """
    if not 1 <= n_classes <= len(FINE_LABEL_NAMES):
        raise ValueError(f"n_classes must be in 1..{len(FINE_LABEL_NAMES)}, got {n_classes}")
    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train and n_test must be >= 1, got {n_train}, {n_test}")
    final = Path(root) / CIFAR100_DIR
    with atomic_dir(final) as tmp:
        for split, n, batch in (("train", n_train, "training"), ("test", n_test, "testing")):
            rng = np.random.default_rng([seed, _stable_int(split)])
            fine_N = rng.permutation(np.arange(n) % n_classes)
            images_NHWC = _fake_images(fine_N, rng)
            obj = {
                b"filenames": [f"{FINE_LABEL_NAMES[k]}_s_{i:06d}.png".encode() for i, k in enumerate(fine_N)],
                b"batch_label": f"{batch} batch 1 of 1".encode(),
                b"fine_labels": [int(k) for k in fine_N],
                b"coarse_labels": [COARSE_OF_FINE[k] for k in fine_N],
                b"data": np.ascontiguousarray(images_NHWC.transpose(0, 3, 1, 2)).reshape(n, N_PIXELS),
            }
            _py2_pickle(obj, tmp / split)
        _py2_pickle(
            {
                b"fine_label_names": [n.encode() for n in FINE_LABEL_NAMES],
                b"coarse_label_names": [n.encode() for n in COARSE_LABEL_NAMES],
            },
            tmp / "meta",
        )
    log.info(
        "wrote a fake CIFAR-100 (%d train, %d test, %d classes) to %s", n_train, n_test, n_classes, final
    )
    return final


def write_cifar_archive_tar(folder: str | os.PathLike, tar_gz_path: str | os.PathLike) -> Path:
    """Pack ``folder`` (a ``cifar-100-python`` folder) into a .tar.gz laid out like the official archive.

    Entries are ``cifar-100-python/`` then its files in sorted order, with fixed owner and time, so the bytes
    depend only on the contents. Written atomically; returns ``tar_gz_path``.
    """
    folder, tar_gz_path = Path(folder), Path(tar_gz_path)
    if not folder.is_dir():
        raise FileNotFoundError(f"not a folder: {folder}")

    def normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        return info

    with atomic_path(tar_gz_path) as tmp:
        with (
            tmp.open("wb") as raw,
            gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tf,
        ):
            tf.add(folder, arcname=CIFAR100_DIR, recursive=False, filter=normalise)
            for path in sorted(p for p in folder.iterdir() if p.is_file()):
                tf.add(path, arcname=f"{CIFAR100_DIR}/{path.name}", filter=normalise)
    return tar_gz_path
