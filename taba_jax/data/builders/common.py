"""Shared pieces of the dataset builders: validated file reading, PNG encoding, config naming."""
from __future__ import annotations

import concurrent.futures
import hashlib
import io
import itertools
import json
import os
import threading
import xml.etree.ElementTree as ElementTree

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image


class LocalFilesBuilder(tfds.core.GeneratorBasedBuilder):
    """A builder whose data only ever comes from local (manual) files: TFDS's lookup of pre-computed
    metadata on its GCS bucket is skipped. That lookup runs whenever a builder is created before its
    data is prepared, and leaves an empty `/tmp/tmp*tfds` directory behind each time."""

    def dataset_info_from_configs(self, **kwargs) -> tfds.core.DatasetInfo:
        info = super().dataset_info_from_configs(**kwargs)
        info.initialize_from_bucket = lambda: None  # these datasets are never on TFDS's bucket
        return info


class DataError(ValueError):
    """Bad input for a builder: names the offending path and what was expected there."""

    def __init__(self, path, problem: str):
        self.path = os.fspath(path)
        super().__init__(f"{self.path}: {problem}")


def require_dir(path, expected: str) -> str:
    """`path` if it is a directory, else a DataError saying what should be there."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise DataError(path, f"directory not found; expected {expected}")
    return path


def read_image(path, modes: tuple[str, ...]) -> tuple[np.ndarray, str]:
    """Fully decodes an image (so that truncated files fail here) whose PIL mode is one of `modes`.
    Returns the array (uint8, or uint16 for 16-bit modes) and the mode."""
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            array = np.asarray(image)
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(path, f"unreadable or truncated image ({e})") from None
    if mode not in modes:
        raise DataError(path, f"image mode {mode!r}, expected one of {modes}")
    if mode in ("I", "I;16", "I;16B", "I;16L"):
        if array.min(initial=0) < 0 or array.max(initial=0) > 65535:
            raise DataError(path, f"values outside 16-bit range [{array.min()}, {array.max()}]")
        array = array.astype(np.uint16)
    return array, mode


# np.load parses each header with ast.literal_eval, and CPython 3.11's ast is not thread-safe: files
# read in parallel by `threaded_map` failed with "SystemError: AST constructor recursion depth
# mismatch" (seen on 3.11.7 under load). One load at a time; the decoding of images stays parallel.
_NPY_LOCK = threading.Lock()


def read_npy(path) -> np.ndarray:
    """np.load without pickles, with the path in any error."""
    try:
        with _NPY_LOCK:
            return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(path, f"unreadable .npy file ({e})") from None


def read_json(path) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(path, f"unreadable JSON file ({e})") from None


def read_xml(path) -> ElementTree.Element:
    try:
        return ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError) as e:
        raise DataError(path, f"unreadable XML file ({e})") from None


def read_lines(path) -> list[str]:
    """Non-empty stripped lines of a text file (image id lists)."""
    try:
        with open(path) as f:
            return [line.strip() for line in f if line.strip()]
    except OSError as e:
        raise DataError(path, f"unreadable list file ({e})") from None


def check_shape(path, array: np.ndarray, height: int, width: int) -> None:
    """DataError unless the target's first two dimensions match its image."""
    if array.shape[:2] != (height, width):
        raise DataError(path, f"target of shape {array.shape[:2]} does not match its image of shape {(height, width)}")


def png_bytes(array: np.ndarray) -> bytes:
    """Lossless PNG encoding of uint8 (H, W), (H, W, 1) or (H, W, 3) arrays."""
    if array.dtype != np.uint8:
        raise TypeError(f"png_bytes takes uint8 arrays, got {array.dtype}")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def placeholder_png(channels: int) -> bytes:
    """A 1x1 image stored for a label that is missing (its `<name>_present` flag is False)."""
    return png_bytes(np.zeros((1, 1, channels), np.uint8))


def options_digest(options: dict) -> str:
    """Short stable hash of builder options, so that each distinct set of options gets its own
    config name (and directory) and `build` never returns a dataset built with other options."""
    text = json.dumps(options, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def threaded_map(fn, items, workers: int | None = None, chunk: int = 64):
    """fn(item) for each item, in order, computed by a thread pool `chunk` items at a time (file
    reading and PNG decoding release the GIL), so memory stays bounded on large datasets."""
    workers = workers or min(8, os.cpu_count() or 1)
    iterator = iter(items)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        while batch := list(itertools.islice(iterator, chunk)):
            yield from pool.map(fn, batch)
