"""Rotation-transformation task of EvoGrad (section 4.2), on Omniglot.

The paper uses MNIST, which cannot be downloaded here (no dataset downloads at
run time, and only Omniglot is prepared offline); the same task is built from
Omniglot characters instead: training images upright, validation and test
images rotated by 30 degrees, and a rotation angle applied to the training
images is the hyperparameter to meta-learn.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from metagrad import _checks


def rotate(images: jax.Array, degrees) -> jax.Array:
  """Rotates ``[B, H, W, C]`` images counter-clockwise about their centre.

  Bilinear resampling (``jax.scipy.ndimage.map_coordinates``, zeros outside),
  differentiable with respect to ``degrees``, which may be traced.

  Args:
    images: ``[B, H, W, C]``.
    degrees: the angle (a scalar; may be traced and differentiated).

  Returns:
    The rotated images, shaped and typed like ``images``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from metagrad import tasks
    >>> tasks.rotate(jnp.zeros((2, 28, 28, 1)), 30.0).shape
    (2, 28, 28, 1)

  References:
    Bohdal, Yang & Hospedales 2021, "EvoGrad: Efficient Gradient-Based
    Meta-Learning and Hyperparameter Optimization", arXiv:2106.10575, section 4.2.
  """
  _, h, w, _ = images.shape
  theta = jnp.deg2rad(jnp.asarray(degrees, images.dtype))
  yy, xx = jnp.meshgrid(jnp.arange(h, dtype=images.dtype), jnp.arange(w, dtype=images.dtype),
                        indexing="ij")
  cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
  # Inverse map: output pixel (y, x) samples the input pixel it came from
  # (rows grow downwards, so this is counter-clockwise on screen, like np.rot90).
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  src_y = cos * (yy - cy) + sin * (xx - cx) + cy
  src_x = -sin * (yy - cy) + cos * (xx - cx) + cx

  def one_channel(img):
    return jax.scipy.ndimage.map_coordinates(img, [src_y, src_x], order=1, mode="constant",
                                             cval=0.0)

  per_image = jax.vmap(one_channel, in_axes=-1, out_axes=-1)
  return jax.vmap(per_image)(images)


class RotationTask(NamedTuple):
  """EvoGrad's rotation-transformation task (``rotation_task``): training
  images upright, validation and test images rotated.

  Attributes:
    train_x: ``[num_classes * num_train, H, W, C]`` upright training images.
    train_y: their int32 labels in ``0 .. num_classes - 1``.
    val_x: ``[num_classes * num_val, H, W, C]`` rotated validation images
      (the hyperparameters' objective).
    val_y: their labels.
    test_x: rotated test images of the remaining examples per class.
    test_y: their labels.

  Examples:
    >>> import numpy as np
    >>> from metagrad import tasks
    >>> task = tasks.rotation_task(np.zeros((20, 20, 28, 28, 1), np.float32), num_classes=5)
    >>> task.train_y.shape, task.val_y.shape, task.test_y.shape
    ((60,), (20,), (20,))
  """
  train_x: jax.Array
  train_y: jax.Array
  val_x: jax.Array
  val_y: jax.Array
  test_x: jax.Array
  test_y: jax.Array


def rotation_task(images: np.ndarray, *, num_classes: int = 100, num_train: int = 12,
                  num_val: int = 4, angle: float = 30.0, seed: int = 0) -> RotationTask:
  """Classify ``num_classes`` characters; val/test images rotated by ``angle``.

  Args:
    images: ``[characters, examples, H, W, C]`` (e.g. ``load_omniglot()``).
    num_classes: characters drawn (seeded) as classes (>= 2).
    num_train: upright training images per class (>= 1); of the remaining
      images, ``num_val`` (>= 1) per class go to validation and the rest (at
      least one) to test, all rotated. The three sets never share an image.
    angle: the validation/test rotation in degrees.
    seed: which characters are drawn.

  Returns:
    A ``RotationTask`` (train / val / test images and labels).

  Examples:
    >>> import numpy as np
    >>> from metagrad import tasks
    >>> images = np.zeros((50, 20, 28, 28, 1), np.float32)
    >>> task = tasks.rotation_task(images, num_classes=10, num_train=12, num_val=4)
    >>> task.train_x.shape, task.val_x.shape, task.test_x.shape
    ((120, 28, 28, 1), (40, 28, 28, 1), (40, 28, 28, 1))

  References:
    Bohdal, Yang & Hospedales 2021, "EvoGrad: Efficient Gradient-Based
    Meta-Learning and Hyperparameter Optimization", arXiv:2106.10575, section 4.2.
  """
  _checks.rank("images", images, 5)
  chars, examples = images.shape[:2]
  num_classes = _checks.integer("num_classes", num_classes, minimum=2, maximum=chars)
  num_train = _checks.count("num_train", num_train)
  num_val = _checks.count("num_val", num_val)
  _checks.number("angle", angle)
  if num_train + num_val >= examples:
    raise ValueError(f"`num_train` + `num_val` ({num_train} + {num_val}) must leave test "
                     f"images: at most {examples - 1} of the {examples} per class.")
  rng = np.random.default_rng(seed)
  picked = images[rng.permutation(chars)[:num_classes]]
  labels = np.broadcast_to(np.arange(num_classes)[:, None], picked.shape[:2])

  def part(lo, hi, rotated):
    x = jnp.asarray(picked[:, lo:hi].reshape(-1, *picked.shape[2:]))
    if rotated:
      x = rotate(x, angle)
    return x, jnp.asarray(labels[:, lo:hi].reshape(-1))

  split = num_train + num_val
  return RotationTask(*part(0, num_train, False), *part(num_train, split, True),
                      *part(split, examples, True))
