"""The 4-block convolutional network of ProtoNet / MAML, stateless."""

from __future__ import annotations

import haiku as hk
import jax
import jax.numpy as jnp

from metagrad import _checks

POOLINGS = ("flatten", "global_mean")


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 max-pooling with stride 2 ("VALID": odd edges dropped), ``[B, H, W, C]``.

  The same values as ``hk.max_pool(x, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")``,
  written as a reshape and a max so that its gradient is a masked broadcast
  instead of XLA's ``select_and_scatter``, which on CPU made a conv4 gradient
  2x slower and second-order MAML through 4 inner steps about 3x slower.
  Gradients differ only at exact ties inside a window (split evenly here,
  given to one element there); after a ReLU such ties are zeros whose
  gradient is zero either way.

  Near-ties matter for second-order quantities. A window whose two largest
  inputs differ by about float rounding routes the derivative through
  whichever wins, and the winner can change with the compiled program: the
  same episode's support-loss Hessian-vector product differed by 13-67% of
  its largest entry between ``vmap`` over 8 Omniglot episodes and one episode
  at a time (conv4-16 after iMAML training; average pooling agrees to 1e-6),
  and one of 32 extreme eigenvalues moved (lambda_max 7.30 -> 6.60). Losses
  and first-order gradients agreed (2e-7, 0.2%). For curvature checks
  (``estimators.hessian_extreme_eigenvalues``) map over tasks one at a time,
  as ``examples/imaml_omniglot.py`` does.
  """
  b, h, w, c = x.shape
  x = x[:, : h // 2 * 2, : w // 2 * 2]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class BatchStatNorm(hk.Module):
  """Batch normalisation with the current batch's statistics and no state.

  As in MAML and ProtoNet training (Finn et al. 2017; Snell et al. 2017), the
  mean and variance come from the batch being processed (support or query
  set), so the network needs no ``hk.State`` and stays a pure function of its
  parameters: learned scale (init 1) and offset (init 0) per channel.

  Args:
    eps: added to the variance before the square root.
    name: the Haiku module name.

  Examples:
    >>> import haiku as hk, jax, jax.numpy as jnp
    >>> from metagrad import models
    >>> norm = hk.without_apply_rng(hk.transform(lambda x: models.BatchStatNorm()(x)))
    >>> x = jax.random.normal(jax.random.PRNGKey(0), (8, 5, 5, 3)) * 4.0 + 2.0
    >>> y = norm.apply(norm.init(None, x), x)
    >>> bool(jnp.allclose(y.mean((0, 1, 2)), 0.0, atol=1e-5)), y.shape
    (True, (8, 5, 5, 3))

  References:
    Ioffe & Szegedy 2015, "Batch Normalization: Accelerating Deep Network
    Training by Reducing Internal Covariate Shift", arXiv:1502.03167; Finn,
    Abbeel & Levine 2017, "Model-Agnostic Meta-Learning for Fast Adaptation
    of Deep Networks", arXiv:1703.03400 (batch statistics at meta-test time).
  """

  def __init__(self, eps: float = 1e-5, name: str | None = None):
    super().__init__(name=name)
    self.eps = eps

  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    scale = hk.get_parameter("scale", (channels,), x.dtype, init=jnp.ones)
    offset = hk.get_parameter("offset", (channels,), x.dtype, init=jnp.zeros)
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axes, keepdims=True)
    var = jnp.var(x, axes, keepdims=True)
    per_channel = (1,) * (x.ndim - 1) + (channels,)     # explicit broadcast (rank promotion)
    return ((x - mean) * jax.lax.rsqrt(var + self.eps) * scale.reshape(per_channel)
            + offset.reshape(per_channel))


def conv4(*, channels: int = 64, num_blocks: int = 4, num_classes: int | None = None,
          pooling: str = "flatten") -> hk.Transformed:
  """Stateless conv4: ``num_blocks`` x [3x3 conv -> batch-stat norm -> ReLU -> 2x2 max-pool].

  the ES-ProtoNet TPU paper, section III-B (channels 16/32/64 in its tables);
  the Kronecker meta-optimizer paper's Fig. 3 / A.1.2 drops blocks (1-4 layers).
  With 28x28 inputs, 64 channels, 4 blocks and a 10-way head this has the
  112,586 parameters quoted in A.1.2 of the Kronecker meta-optimizer paper.

  Args:
    channels: filters in every block.
    num_blocks: 1 to 4.
    num_classes: ``None`` for a ProtoNet embedding; an int adds a linear head
      (MAML classifier).
    pooling: ``"flatten"`` the last feature map, or ``"global_mean"`` it over
      space (keeps the head's input at ``channels`` when blocks are dropped,
      as the SCNN of that paper's A.1.2).

  Returns:
    ``hk.Transformed`` with ``init(rng, images)`` and
    ``apply(params, images)``; images are ``[batch, H, W, C]``.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from metagrad import models
    >>> net = models.conv4(channels=8, num_classes=5)
    >>> params = net.init(jax.random.PRNGKey(0), jnp.zeros((2, 28, 28, 1)))
    >>> net.apply(params, jnp.zeros((2, 28, 28, 1))).shape
    (2, 5)

  References:
    Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra 2016, "Matching
    Networks for One Shot Learning", arXiv:1606.04080; Snell, Swersky & Zemel
    2017, "Prototypical Networks for Few-shot Learning", arXiv:1703.05175.
  """
  num_blocks = _checks.integer("num_blocks", num_blocks, minimum=1, maximum=4)
  channels = _checks.count("channels", channels)
  if num_classes is not None:
    num_classes = _checks.count("num_classes", num_classes)
  _checks.choice("pooling", pooling, POOLINGS)

  def forward(images: jax.Array) -> jax.Array:
    if images.ndim != 4:
      raise ValueError(f"conv4 expects `images` [batch, H, W, C], got shape {images.shape}.")
    if min(images.shape[1:3]) < 2**num_blocks:
      raise ValueError(
          f"conv4 with {num_blocks} blocks halves the image {num_blocks} times: `images` must "
          f"be at least {2**num_blocks}x{2**num_blocks}, got {images.shape[1]}x"
          f"{images.shape[2]} (use fewer blocks or larger images).")
    x = images
    for i in range(num_blocks):
      x = hk.Conv2D(channels, 3, padding="SAME", name=f"conv{i}")(x)
      x = BatchStatNorm(name=f"norm{i}")(x)
      x = jax.nn.relu(x)
      x = max_pool_2x2(x)
    x = x.mean(axis=(1, 2)) if pooling == "global_mean" else x.reshape(x.shape[0], -1)
    if num_classes is not None:
      x = hk.Linear(num_classes, name="head")(x)
    return x

  return hk.without_apply_rng(hk.transform(forward))
