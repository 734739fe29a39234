"""Horizons: how many windows a particle unrolls before it starts a new inner
problem.

``init_state(..., num_windows=...)`` takes ``None`` (never reset: an infinite
horizon, as in influence balancing), an int (a fixed horizon, shorthand for
``FixedHorizon``) or a schedule object. ``RandomHorizon`` draws each
episode's length uniformly from ``[min_windows, max_windows]``, keyed by the
episode (so both members of an antithetic pair share it, and the draw does not
depend on devices or chunks): particles then reset at different times, the
other remedy besides ``stagger`` for all particles resetting together
(learned_optimization's truncation schedules draw random unroll lengths the same
way; Metz et al. 2019, arXiv:1810.10180; Vicol et al. 2021, arXiv:2112.13835).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .. import _checks


class FixedHorizon(NamedTuple):
  """Every episode lasts ``num_windows`` windows (``init_state(...,
  num_windows=W)`` with an int makes one).

  Attributes:
    num_windows: the episode length in truncation windows (>= 1).

  Examples:
    >>> from metagrad import estimators
    >>> estimators.FixedHorizon(20).max_windows
    20
  """
  num_windows: int

  @property
  def max_windows(self) -> int:
    return self.num_windows

  def lengths(self, episode_keys: jax.Array) -> jax.Array:
    """Each episode's length in windows, ``[rows]`` int32."""
    return jnp.full(episode_keys.shape[:1], self.num_windows, jnp.int32)


class RandomHorizon(NamedTuple):
  """Each episode lasts a uniform random number of windows in
  ``[min_windows, max_windows]``, drawn from its episode key (the two members
  of an antithetic pair share it), so particles reset at different times.
  Pass it as ``init_state(..., num_windows=RandomHorizon(lo, hi))``.

  Attributes:
    min_windows: the shortest episode, in windows (>= 1).
    max_windows: the longest episode, in windows (>= ``min_windows``).

  Examples:
    >>> import jax
    >>> from metagrad import estimators
    >>> horizon = estimators.RandomHorizon(5, 15)
    >>> lengths = horizon.lengths(jax.random.split(jax.random.PRNGKey(0), 1000))
    >>> bool(lengths.min() >= 5 and lengths.max() <= 15)
    True
  """
  min_windows: int
  max_windows: int

  def lengths(self, episode_keys: jax.Array) -> jax.Array:
    """Each episode's length in windows, ``[rows]`` int32."""
    draw = lambda k: jax.random.randint(jax.random.fold_in(k, 3), (), self.min_windows,
                                        self.max_windows + 1)
    return jax.vmap(draw)(episode_keys).astype(jnp.int32)


Horizon = FixedHorizon | RandomHorizon


def as_horizon(value: Any) -> Horizon | None:
  """``num_windows`` as a schedule (``None`` stays ``None``: never reset)."""
  if value is None:
    return None
  if isinstance(value, FixedHorizon):
    return FixedHorizon(_checks.count("num_windows", value.num_windows))
  if isinstance(value, RandomHorizon):
    low = _checks.count("num_windows", value.min_windows)
    high = _checks.count("num_windows", value.max_windows)
    if high < low:
      raise ValueError(f"`num_windows`: RandomHorizon needs min_windows <= max_windows, got "
                       f"{value}.")
    return RandomHorizon(low, high)
  if isinstance(value, (tuple, list)) or hasattr(value, "lengths"):
    raise ValueError(f"`num_windows` must be None, an int, estimators.FixedHorizon or "
                     f"estimators.RandomHorizon, got {value!r}.")
  return FixedHorizon(_checks.count("num_windows", value))
