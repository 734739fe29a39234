"""Omniglot through TFDS (``tfds.data_source``), decoded once and cached on disk.

Reads the TFDS ``omniglot`` builder (v3.0.0, array_record) from ``data_dir`` or
``$TFDS_DATA_DIR``; no hand-written file parsing and no download at run time.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import pathlib
import time

import numpy as np

NUM_BACKGROUND = 964          # TFDS "train" = images_background
NUM_EVALUATION = 659          # TFDS "test"  = images_evaluation
NUM_CHARACTERS = NUM_BACKGROUND + NUM_EVALUATION
EXAMPLES_PER_CHARACTER = 20
SPLITS = ("standard", "es_protonet", "background")
ES_PROTONET_SIZES = (4804, 1012, 676)   # the ES-ProtoNet TPU paper, section III-B


class DatasetNotFoundError(ValueError):
  """The prepared TFDS Omniglot copy is not where TFDS looks.

  A ``ValueError`` whose message names the directory searched and how to
  point TFDS at the copy (``data_dir=``, or the ``TFDS_DATA_DIR`` environment
  variable); no download is attempted.

  Examples:
    >>> from metagrad import tasks
    >>> issubclass(tasks.DatasetNotFoundError, ValueError)
    True
  """


def default_data_dir() -> pathlib.Path:
  """``$TFDS_DATA_DIR``, else TFDS's own default ``~/tensorflow_datasets``."""
  return pathlib.Path(os.environ.get("TFDS_DATA_DIR") or
                      os.path.expanduser("~/tensorflow_datasets"))


def _data_dir(data_dir) -> pathlib.Path:
  path = default_data_dir() if data_dir is None else pathlib.Path(data_dir)
  if not (path / "omniglot" / "3.0.0").is_dir():
    raise DatasetNotFoundError(
        f"No prepared TFDS 'omniglot' (3.0.0) under {path}. Point `data_dir` or the "
        f"TFDS_DATA_DIR environment variable at a prepared copy (in this project: "
        f"../shared/data/tfds), or install TensorFlow on a machine with internet access "
        f"and run tfds.data_source('omniglot') once to download and prepare it.")
  return path


def _cache_key(data_dir: pathlib.Path, image_size: int) -> str:
  """Changes whenever the decoding code, the image size or the prepared
  dataset (its dataset_info.json) changes, so a stale cache is never reused."""
  info = data_dir / "omniglot" / "3.0.0" / "dataset_info.json"
  digest = hashlib.sha256(inspect.getsource(_decode_all).encode())
  digest.update(str(image_size).encode())
  digest.update(info.read_bytes() if info.exists() else b"")
  return digest.hexdigest()[:12]


def _cache_dir(cache_dir) -> pathlib.Path:
  if cache_dir is None:
    cache_dir = os.environ.get("METAGRAD_CACHE_DIR", os.path.expanduser("~/.cache/metagrad"))
  return pathlib.Path(cache_dir)


def _decode_all(data_dir: pathlib.Path, image_size: int) -> np.ndarray:
  import tensorflow_datasets as tfds  # heavy import, only on a cache miss
  from PIL import Image

  sources = tfds.data_source("omniglot", data_dir=str(data_dir), download=False)
  out = np.zeros((NUM_CHARACTERS, EXAMPLES_PER_CHARACTER, image_size, image_size), np.uint8)
  filled = np.zeros(NUM_CHARACTERS, np.int64)
  for split in ("train", "test"):
    source = sources[split]
    for start in range(0, len(source), 1024):
      for ex in source.__getitems__(list(range(start, min(start + 1024, len(source))))):
        # Pillow decodes strokes as 0 and background as 1 (OpenCV/TF: 0 / 255):
        # threshold, then invert so that strokes are 1 whatever the decoder.
        strokes = (ex["image"][..., 0] == 0).astype(np.uint8) * 255
        small = Image.fromarray(strokes).resize((image_size, image_size), Image.BOX)
        label = int(ex["label"])
        out[label, filled[label]] = np.asarray(small)
        filled[label] += 1
  if not np.all(filled == EXAMPLES_PER_CHARACTER):
    raise ValueError(f"Omniglot under {data_dir} is incomplete: counts {np.unique(filled)}.")
  return out


def load_omniglot(*, image_size: int = 28, data_dir=None, cache_dir=None,
                  verbose: bool = False) -> np.ndarray:
  """All 1623 characters as ``[1623, 20, S, S, 1]`` float32, strokes = 1.

  Characters 0..963 are the background set (TFDS ``train``), 964..1622 the
  evaluation set. Images are resized from 105x105 with area averaging.

  Args:
    image_size: 28 or 32.
    data_dir: the TFDS data directory holding ``omniglot/3.0.0``; default
      ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``. It must hold the
      dataset even when a cached copy exists (a wrong directory is an error,
      never silently served from the cache).
    cache_dir: where the decoded array is cached (uint8); default
      ``$METAGRAD_CACHE_DIR`` or ``~/.cache/metagrad``. The first load decodes
      32,460 PNGs, later loads read one file; the cache key hashes the
      decoding code, the size and the dataset's metadata.
    verbose: print the load time.

  Returns:
    ``[1623, 20, S, S, 1]`` float32 in [0, 1].

  Raises:
    DatasetNotFoundError: ``data_dir`` does not hold ``omniglot/3.0.0`` (no
      download is attempted).

  Examples:
    >>> from metagrad import tasks
    >>> try:
    ...   tasks.load_omniglot(data_dir="/nonexistent")
    ... except tasks.DatasetNotFoundError as err:
    ...   print("not found:", "/nonexistent" in str(err))
    not found: True

  References:
    Lake, Salakhutdinov & Tenenbaum 2015, "Human-level concept learning through
    probabilistic program induction", Science 350(6266) (no arXiv version).
  """
  if image_size not in (28, 32) or isinstance(image_size, bool):
    raise ValueError(f"`image_size` must be 28 or 32, got {image_size!r}.")
  source = _data_dir(data_dir)
  cache = _cache_dir(cache_dir) / f"omniglot-3.0.0-{image_size}-{_cache_key(source, image_size)}.npy"
  start = time.perf_counter()
  hit = cache.exists()
  if hit:
    raw = np.load(cache)
  else:
    raw = _decode_all(source, image_size)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, raw)
    os.replace(tmp, cache)
  if verbose:
    print(f"omniglot {image_size}x{image_size}: {time.perf_counter() - start:.1f}s "
          f"({'from cache' if hit else 'decoded and cached'})")
  return (raw[..., None].astype(np.float32) / 255.0)


def with_rotations(images: np.ndarray) -> np.ndarray:
  """``[n, E, S, S, C] -> [4n, E, S, S, C]``: class ``4 i + r`` is character
  ``i`` rotated by ``90 r`` degrees (rotations as new classes).

  Args:
    images: ``[n, E, S, S, C]``.

  Returns:
    ``[4 n, E, S, S, C]`` images, four classes per character.

  Examples:
    >>> import numpy as np
    >>> from metagrad import tasks
    >>> tasks.with_rotations(np.zeros((3, 20, 28, 28, 1), np.float32)).shape
    (12, 20, 28, 28, 1)

  References:
    Santoro, Bartunov, Botvinick, Wierstra & Lillicrap 2016, "One-shot
    Learning with Memory-Augmented Neural Networks", arXiv:1605.06065
    (rotations as new classes).
  """
  rotated = np.stack([np.rot90(images, r, axes=(2, 3)) for r in range(4)], axis=1)
  return rotated.reshape(-1, *images.shape[1:])


def omniglot_splits(images: np.ndarray, *, split: str = "standard", rotations: bool = True,
                    seed: int = 0) -> dict[str, np.ndarray]:
  """Class splits of ``load_omniglot``'s array.

  * ``"standard"`` (Vinyals et al. 2016, MAML): a seeded shuffle of the 1623
    characters, 1200 for training and the remaining 423 for testing, rotations
    added within each split (4800 / 1692 classes).
  * ``"es_protonet"`` (the ES-ProtoNet TPU paper, III-B): all 6492 rotated classes
    shuffled and split 4804 / 1012 / 676 into train / val / test (a
    character's rotations may land in different splits, as in the paper).
  * ``"background"`` (Lake et al.): background 964 vs evaluation 659 characters.

  Args:
    images: ``load_omniglot``'s array (all 1623 characters).
    split: ``"standard"``, ``"es_protonet"`` or ``"background"``.
    rotations: add the 90/180/270-degree rotations as classes.
    seed: the shuffle of the split.

  Returns:
    ``{"train": ..., "test": ...}`` (and ``"val"`` for ``"es_protonet"``), each
    ``[classes, 20, S, S, 1]``.

  Examples:
    >>> import numpy as np
    >>> from metagrad import tasks
    >>> images = np.zeros((1623, 20, 28, 28, 1), np.float32)
    >>> splits = tasks.omniglot_splits(images, split="standard")
    >>> splits["train"].shape[0], splits["test"].shape[0]
    (4800, 1692)

  References:
    Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra 2016, "Matching
    Networks for One Shot Learning", arXiv:1606.04080; Sheng & He 2022,
    "Distributed Evolution Strategies Using TPUs for Meta-Learning",
    arXiv:2201.00093, section III-B.
  """
  if split not in SPLITS:
    raise ValueError(f"`split` must be one of {SPLITS}, got {split!r}.")
  if images.shape[0] != NUM_CHARACTERS:
    raise ValueError(f"`images` must hold all {NUM_CHARACTERS} characters, got {images.shape[0]}.")
  rng = np.random.default_rng(seed)
  rotate = with_rotations if rotations else (lambda x: x)
  if split == "background":
    return {"train": rotate(images[:NUM_BACKGROUND]), "test": rotate(images[NUM_BACKGROUND:])}
  if split == "standard":
    order = rng.permutation(NUM_CHARACTERS)
    return {"train": rotate(images[order[:1200]]), "test": rotate(images[order[1200:]])}
  if not rotations:
    raise ValueError("The 'es_protonet' split is defined on the rotated classes: "
                     "use `rotations=True`.")
  augmented = with_rotations(images)
  order = rng.permutation(augmented.shape[0])
  n_train, n_val, _ = ES_PROTONET_SIZES
  return {"train": augmented[order[:n_train]],
          "val": augmented[order[n_train:n_train + n_val]],
          "test": augmented[order[n_train + n_val:]]}
