import time

import numpy as np
import pytest

from metagrad import tasks
from metagrad.tasks import _omniglot as om


def test_counts_and_pixels(omniglot):
  assert omniglot.shape == (964 + 659, 20, 28, 28, 1)
  assert omniglot.dtype == np.float32
  assert omniglot.min() == 0.0 and omniglot.max() == 1.0
  # Strokes are 1 on a 0 background: a small fraction of each image is ink.
  ink = omniglot.mean(axis=(2, 3, 4))
  assert 0.02 < ink.mean() < 0.25 and ink.min() > 0.0


def test_splits_counts_and_disjoint(omniglot):
  std = tasks.omniglot_splits(omniglot, split="standard")
  assert std["train"].shape[0] == 4800 and std["test"].shape[0] == 1692
  es = tasks.omniglot_splits(omniglot, split="es_protonet")
  assert [es[k].shape[0] for k in ("train", "val", "test")] == [4804, 1012, 676]
  bg = tasks.omniglot_splits(omniglot, split="background", rotations=False)
  assert bg["train"].shape[0] == 964 and bg["test"].shape[0] == 659
  for splits in (std, es):
    keys = {name: {arr[i, 0].tobytes() for i in range(arr.shape[0])} for name, arr in splits.items()}
    names = list(keys)
    for i, a in enumerate(names):
      for b in names[i + 1:]:
        assert not keys[a] & keys[b], (a, b)


def test_rotations_are_new_classes(omniglot):
  rot = tasks.with_rotations(omniglot[:3])
  assert rot.shape == (12, 20, 28, 28, 1)
  np.testing.assert_array_equal(rot[1, 0, :, :, 0], np.rot90(omniglot[0, 0, :, :, 0]))
  np.testing.assert_array_equal(rot[6, 5, :, :, 0], np.rot90(omniglot[1, 5, :, :, 0], 2))


def test_second_load_hits_cache(omniglot, tmp_path):
  start = time.perf_counter()
  again = tasks.load_omniglot()
  assert time.perf_counter() - start < 5.0   # a load from the cache file, not 32k PNG decodes
  np.testing.assert_array_equal(again, omniglot)


def test_32px(omniglot, tmp_path):
  big = tasks.load_omniglot(image_size=32)
  assert big.shape == (1623, 20, 32, 32, 1)


def test_missing_dataset_message(tmp_path):
  with pytest.raises(tasks.DatasetNotFoundError, match="TFDS_DATA_DIR"):
    tasks.load_omniglot(data_dir=tmp_path / "nowhere", cache_dir=tmp_path / "cache")


def test_bad_arguments(omniglot):
  with pytest.raises(ValueError, match="image_size"):
    tasks.load_omniglot(image_size=64)
  with pytest.raises(ValueError, match="split"):
    tasks.omniglot_splits(omniglot, split="vinyals")
  with pytest.raises(ValueError, match="images"):
    tasks.omniglot_splits(omniglot[:10])
