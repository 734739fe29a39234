"""Sine-wave regression tasks (Finn et al. 2017; TURTLE paper 3.5.2)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from metagrad import _checks

AMPLITUDE = (0.1, 5.0)
PHASE = (0.0, jnp.pi)
INPUT = (-5.0, 5.0)


class SineTask(NamedTuple):
  """One sine-regression task (``sample_sine_task``; with a leading axis from
  ``sample_sine_tasks``).

  Attributes:
    amplitude: the task's ``A``, a scalar in ``[0.1, 5]``.
    phase: the task's ``phi``, a scalar in ``[0, pi]``.
    support_x: ``[shot, 1]`` inputs in ``[-5, 5]``.
    support_y: ``[shot, 1]`` targets ``A sin(x - phi)``.
    query_x: ``[query, 1]`` inputs.
    query_y: ``[query, 1]`` targets.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from metagrad import tasks
    >>> t = tasks.sample_sine_task(jax.random.PRNGKey(0))
    >>> bool(jnp.allclose(t.query_y, tasks.sine(t.query_x, t.amplitude, t.phase)))
    True
  """
  amplitude: jax.Array
  phase: jax.Array
  support_x: jax.Array
  support_y: jax.Array
  query_x: jax.Array
  query_y: jax.Array


def sine(x, amplitude, phase):
  """``amplitude * sin(x - phase)``.

  Args:
    x: inputs.
    amplitude: the task's A.
    phase: the task's phi.

  Returns:
    ``amplitude * sin(x - phase)``, shaped like the broadcast of the inputs.

  Examples:
    >>> import jax.numpy as jnp
    >>> from metagrad import tasks
    >>> float(tasks.sine(jnp.array(0.0), 2.0, 0.0))
    0.0

  References:
    Finn, Abbeel & Levine 2017, "Model-Agnostic Meta-Learning for Fast
    Adaptation of Deep Networks", arXiv:1703.03400, section 5.1.
  """
  return amplitude * jnp.sin(x - phase)


def sample_sine_task(key: jax.Array, *, shot: int = 5, query: int = 10) -> SineTask:
  """``y = A sin(x - phi)``, ``A ~ U[0.1, 5]``, ``phi ~ U[0, pi]``, ``x ~ U[-5, 5]``.

  Args:
    key: PRNG key (same key, same task).
    shot: support points (a static int >= 1).
    query: query points (a static int >= 1).

  Returns:
    A ``SineTask`` with ``[shot, 1]`` support and ``[query, 1]`` query inputs and
    targets.

  Examples:
    >>> import jax
    >>> from metagrad import tasks
    >>> task = tasks.sample_sine_task(jax.random.PRNGKey(0), shot=5, query=10)
    >>> task.support_x.shape, task.query_y.shape
    ((5, 1), (10, 1))

  References:
    Finn, Abbeel & Levine 2017, "Model-Agnostic Meta-Learning for Fast
    Adaptation of Deep Networks", arXiv:1703.03400, section 5.1.
  """
  shot, query = _checks.count("shot", shot), _checks.count("query", query)
  ka, kp, kx = jax.random.split(key, 3)
  amplitude = jax.random.uniform(ka, (), minval=AMPLITUDE[0], maxval=AMPLITUDE[1])
  phase = jax.random.uniform(kp, (), minval=PHASE[0], maxval=PHASE[1])
  x = jax.random.uniform(kx, (shot + query, 1), minval=INPUT[0], maxval=INPUT[1])
  y = sine(x, amplitude, phase)
  return SineTask(amplitude, phase, x[:shot], y[:shot], x[shot:], y[shot:])


def sample_sine_tasks(key: jax.Array, *, num: int, shot: int = 5, query: int = 10) -> SineTask:
  """A meta-batch of ``num`` tasks (leading axis ``num``).

  Args:
    key: PRNG key; task i uses ``split(key, num)[i]``.
    num: tasks (>= 1).
    shot: as ``sample_sine_task``.
    query: as ``sample_sine_task``.

  Returns:
    A ``SineTask`` whose arrays have a leading axis ``num``.

  Examples:
    >>> import jax
    >>> from metagrad import tasks
    >>> batch = tasks.sample_sine_tasks(jax.random.PRNGKey(0), num=4, shot=5, query=10)
    >>> batch.support_x.shape, batch.query_y.shape
    ((4, 5, 1), (4, 10, 1))

  References:
    Finn, Abbeel & Levine 2017, "Model-Agnostic Meta-Learning for Fast
    Adaptation of Deep Networks", arXiv:1703.03400, section 5.1.
  """
  num = _checks.count("num", num)
  shot, query = _checks.count("shot", shot), _checks.count("query", query)
  return jax.vmap(lambda k: sample_sine_task(k, shot=shot, query=query))(jax.random.split(key, num))
