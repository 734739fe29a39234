"""Unrolled estimators: truncated backprop, truncated ES, PES and noise-reuse ES.

The test problem is a linear dynamical system driven by the meta-parameters,

    s_{t+1} = a s_t + theta_0 x_t + theta_1,   loss_t = (s_{t+1} - y_t)^2,

unrolled for W windows of K steps. Every window loss is a quadratic function
of the (per-window) perturbations of theta, so Gaussian smoothing only adds a
constant: the smoothed gradient PES and NRES are unbiased for *is* the exact
gradient of the whole horizon, which backprop through ``full_unroll`` gives.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metagrad import estimators
from helpers import assert_unbiased

A, K, W = 0.9, 2, 5
THETA = {"w": jnp.array([0.3, -0.2])}


def unroll(params, inner, key, window):
  del key
  def step(carry, k):
    s, total = carry
    t = window * K + k
    s = A * s + params["w"][0] * jnp.sin(0.3 * t) + params["w"][1]
    return (s, total + (s - 0.5 * jnp.cos(0.2 * t)) ** 2), None
  (s, total), _ = jax.lax.scan(step, (inner["s"], 0.0), jnp.arange(K))
  return total, {"s": s}


def init_inner(key):
  del key
  return {"s": jnp.asarray(0.5)}


EXACT = jax.grad(estimators.full_unroll(unroll, init_inner, jax.random.PRNGKey(0),
                                        num_windows=W))(THETA)["w"]
# From the registry: every unrolled estimator at its test settings (sigma 0.05).
UNROLLED = {name: functools.partial(estimators.REGISTRY[name].fn,
                                    **estimators.REGISTRY[name].test_kwargs)
            for name in estimators.UNROLLED}


def episode_sum(name, key, particles=8, **init_kw):
  """One horizon of synchronised particles at fixed theta: sum of the W estimates."""
  est = UNROLLED[name]
  state = estimators.init_state(getattr(estimators, name), init_inner, key,
                                num_particles=particles, num_windows=W, params=THETA, **init_kw)
  total = jnp.zeros(2)
  for w in range(W):
    g, state = est(unroll, THETA, state, jax.random.fold_in(key, w), init_inner=init_inner)
    total = total + g["w"]
  return total


def many_episodes(name, reps, **kw):
  keys = jax.random.split(jax.random.PRNGKey(1), reps)
  return np.asarray(jax.jit(jax.vmap(lambda k: episode_sum(name, k, **kw)))(keys))


@pytest.mark.parametrize("name", ["pes", "noise_reuse_es"])
def test_unbiased_for_the_full_horizon_gradient(name):
  assert_unbiased(many_episodes(name, 1000), EXACT)


def test_pes_with_regenerated_accumulator_is_the_same_estimator():
  key = jax.random.PRNGKey(3)
  stored = jax.jit(lambda k: episode_sum("pes", k))(key)      # one program, not eager ops
  regenerated = jax.jit(lambda k: episode_sum("pes", k, accumulator="regenerate"))(key)
  np.testing.assert_allclose(regenerated, stored, rtol=1e-5, atol=1e-6)


def test_truncated_methods_are_measurably_biased():
  # TBPTT is deterministic here: its sum over the horizon misses every
  # dependence of a window's loss on theta through the carried state.
  tbptt = np.asarray(jax.jit(lambda k: episode_sum("truncated_backprop", k))(
      jax.random.PRNGKey(0)))
  assert np.linalg.norm(tbptt - EXACT) > 0.2 * np.linalg.norm(EXACT)
  samples = many_episodes("truncated_es", 1000)
  mean = samples.mean(0)
  se = samples.std(0, ddof=1) / np.sqrt(samples.shape[0])
  assert np.max(np.abs(mean - EXACT) / se) > 8, (mean, EXACT, se)
  # ... and TES converges to TBPTT's biased value, not to the truth.
  np.testing.assert_allclose(mean, tbptt, atol=5 * se.max() + 1e-3)


def test_noise_reuse_has_lower_variance_than_pes_at_equal_cost():
  pes = many_episodes("pes", 1000)
  nres = many_episodes("noise_reuse_es", 1000)
  assert np.trace(np.cov(nres.T)) < 0.8 * np.trace(np.cov(pes.T))


def test_particles_reset_at_the_horizon_and_get_new_problems():
  seen = []

  def init_random(key):
    return {"s": jax.random.normal(key)}

  state = estimators.init_state(estimators.pes, init_random, jax.random.PRNGKey(0),
                                num_particles=4, num_windows=2, params=THETA)
  seen.append(np.asarray(state.inner["s"]))
  np.testing.assert_array_equal(seen[0][0], seen[0][1])    # a pair shares its problem
  assert seen[0][0] != seen[0][2]
  for step in range(3):
    _, state = estimators.pes(unroll, THETA, state, jax.random.PRNGKey(10 + step),
                              sigma=0.05, init_inner=init_random)
  np.testing.assert_array_equal(state.window, [1, 1, 1, 1])   # reset after window 1
  np.testing.assert_array_equal(state.accumulator.shape, (2, 2))
  with pytest.raises(ValueError, match="init_inner"):
    estimators.pes(unroll, THETA, state._replace(window=state.window + 1),
                   jax.random.PRNGKey(0), sigma=0.05)


def test_stagger_spreads_particles_over_the_horizon():
  state = estimators.init_state(estimators.noise_reuse_es, init_inner, jax.random.PRNGKey(0),
                                num_particles=8, num_windows=4, params=THETA, unroll=unroll,
                                stagger=True)
  np.testing.assert_array_equal(state.window, [0, 0, 1, 1, 2, 2, 3, 3])
  # A staggered particle holds the state an unperturbed unroll reaches there.
  s = init_inner(None)
  for w in range(3):
    _, s = unroll(THETA, s, None, w)
  np.testing.assert_allclose(state.inner["s"][6], s["s"], rtol=1e-6)


@pytest.mark.parametrize("name", sorted(UNROLLED))
def test_same_result_on_1_and_4_devices(name):
  # Two devices against one: the registry's shard_map column (test_registry.py).
  key = jax.random.PRNGKey(5)
  est, make = UNROLLED[name], getattr(estimators, name)

  def run(axis_name):
    state = estimators.init_state(make, init_inner, key, num_particles=8, num_windows=2,
                                  params=THETA, axis_name=axis_name)
    grads = []
    for w in range(3):
      g, state = est(unroll, THETA, state, jax.random.fold_in(key, w), init_inner=init_inner,
                     axis_name=axis_name)
      grads.append(g["w"])
    return jnp.stack(grads)

  single = np.asarray(jax.jit(lambda: run(None))())    # one program, not eager ops
  for n in (1, 4):
    out = jax.pmap(lambda _: run("d"), axis_name="d", devices=jax.devices()[:n])(jnp.arange(n))
    for device in np.asarray(out):
      np.testing.assert_allclose(device, single, rtol=1e-5, atol=1e-6)


def test_state_round_trips_through_jit_and_a_checkpoint():
  key = jax.random.PRNGKey(2)
  state = estimators.init_state(estimators.pes, init_inner, key, num_particles=4, num_windows=3,
                                params=THETA)
  step = jax.jit(lambda s, k: estimators.pes(unroll, THETA, s, k, sigma=0.05,
                                             init_inner=init_inner))
  _, state = step(state, jax.random.PRNGKey(7))
  leaves, treedef = jax.tree_util.tree_flatten(state)
  restored = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(np.asarray(x)) for x in leaves])
  a, _ = step(state, jax.random.PRNGKey(8))
  b, _ = step(restored, jax.random.PRNGKey(8))
  chex.assert_trees_all_equal(a, b)
  eager, _ = estimators.pes(unroll, THETA, state, jax.random.PRNGKey(8), sigma=0.05,
                            init_inner=init_inner)
  chex.assert_trees_all_close(a, eager, rtol=1e-5, atol=1e-6)


def test_chunking_changes_only_summation_order():
  key = jax.random.PRNGKey(4)
  outs = []
  for chunk in (1, 3, None):
    state = estimators.init_state(estimators.pes, init_inner, key, num_particles=12,
                                  num_windows=W, params=THETA)
    g, _ = estimators.pes(unroll, THETA, state, key, sigma=0.05, chunk_size=chunk,
                          init_inner=init_inner)
    outs.append(g["w"])
  np.testing.assert_allclose(outs[0], outs[2], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(outs[1], outs[2], rtol=1e-5, atol=1e-7)


def test_infinite_horizon_never_resets():
  state = estimators.init_state(estimators.truncated_backprop, init_inner, jax.random.PRNGKey(0),
                                num_particles=2)
  for w in range(4):
    _, state = estimators.truncated_backprop(unroll, THETA, state, jax.random.PRNGKey(w))
  np.testing.assert_array_equal(state.window, [4, 4])


@pytest.mark.parametrize("call,arg", [
    (lambda: estimators.init_state(estimators.pes, init_inner, jax.random.PRNGKey(0),
                                   num_particles=3, params=THETA), "num_particles"),
    (lambda: estimators.init_state("adam", init_inner, jax.random.PRNGKey(0),
                                   num_particles=2), "estimator"),
    (lambda: estimators.init_state(estimators.pes, init_inner, jax.random.PRNGKey(0),
                                   num_particles=2), "params"),
    (lambda: estimators.init_state(estimators.pes, init_inner, jax.random.PRNGKey(0),
                                   num_particles=2, params=THETA, accumulator="regenerate"),
     "num_windows"),
    (lambda: estimators.init_state(estimators.pes, init_inner, jax.random.PRNGKey(0),
                                   num_particles=2, num_windows=2, params=THETA, stagger=True),
     "stagger"),
    (lambda: estimators.pes(unroll, THETA, {"not": "a state"}, jax.random.PRNGKey(0),
                            sigma=0.1), "state"),
    (lambda: estimators.pes(lambda p, s, k, w: (jnp.stack([s["s"]] * 2), s), THETA, estimators.init_state(
        estimators.pes, init_inner, jax.random.PRNGKey(0), num_particles=2, params=THETA),
        jax.random.PRNGKey(0), sigma=0.1), "unroll"),
    (lambda: estimators.pes(lambda p, s, k, w: jnp.sum(p["w"]), THETA, estimators.init_state(
        estimators.pes, init_inner, jax.random.PRNGKey(0), num_particles=2, params=THETA),
        jax.random.PRNGKey(0), sigma=0.1), "unroll"),
    (lambda: estimators.truncated_es(unroll, THETA, estimators.init_state(
        estimators.truncated_backprop, init_inner, jax.random.PRNGKey(0), num_particles=3),
        jax.random.PRNGKey(0), sigma=0.1), "state"),
    (lambda: estimators.noise_reuse_es(unroll, THETA, estimators.init_state(
        estimators.noise_reuse_es, init_inner, jax.random.PRNGKey(0), num_particles=2),
        jax.random.PRNGKey(0), sigma=-0.1), "sigma"),
])
def test_bad_inputs(call, arg):
  with pytest.raises(ValueError, match=arg):
    call()


# ------------------------------------------------------------ influence balancing
# PES paper section 5.1 (Tallec & Ollivier 2017): s <- A s + theta * signs, one
# step per window, window loss (s_0 - 1)^2 / 2. At steady state the loss is
# (theta c - 1)^2 / 2 with c = [(I - A)^-1 signs]_0 = -6, so the optimum is
# theta = -1/6 and the gradient at theta = 0.5 is (0.5 c - 1) c = +24; TBPTT
# sees only the last step's theta * signs_0 and gets (s_0 - 1) * 1 = -4 there.
N_IB = 23
A_IB = 0.5 * jnp.eye(N_IB) + 0.5 * jnp.eye(N_IB, k=1)
SIGNS_IB = jnp.where(jnp.arange(N_IB) < 10, 1.0, -1.0)
THETA_IB = {"theta": jnp.array([0.5])}


def ib_unroll(params, inner, key, window):
  del key, window
  s = A_IB @ inner["s"] + params["theta"][0] * SIGNS_IB
  return 0.5 * (s[0] - 1.0) ** 2, {"s": s}


def ib_init(key):
  del key
  return {"s": jnp.ones(N_IB)}


def ib_steady_state(theta):
  """The inner state after the transient (what a particle reaches)."""
  return jnp.linalg.solve(jnp.eye(N_IB) - A_IB, theta * SIGNS_IB)


def test_influence_balancing_constants():
  c = float(ib_steady_state(1.0)[0])
  np.testing.assert_allclose(c, -6.0, rtol=1e-5)
  exact = jax.grad(lambda t: 0.5 * (ib_steady_state(t)[0] - 1.0) ** 2)(0.5)
  np.testing.assert_allclose(exact, 24.0, rtol=1e-5)
  state = estimators.init_state(estimators.truncated_backprop, ib_init, jax.random.PRNGKey(0),
                                num_particles=1, params=THETA_IB)
  state = state._replace(inner={"s": ib_steady_state(0.5)[None]})
  g, _ = estimators.truncated_backprop(ib_unroll, THETA_IB, state, jax.random.PRNGKey(0))
  np.testing.assert_allclose(g["theta"], [-4.0], rtol=1e-5)     # the wrong sign


def reference_truncated_es(params, s, key, sigma, pairs):
  """The PES paper's Algorithm 1 written out (antithetic): every pair's +- unroll
  starts from the one state s, which then advances with the unperturbed theta."""
  _, k = jax.random.split(key)
  theta = params["theta"]
  grads = []
  for u in range(pairs):
    z = jax.random.normal(jax.random.fold_in(k, u), theta.shape)
    lp, _ = ib_unroll({"theta": theta + sigma * z}, {"s": s[u]}, None, 0)
    lm, _ = ib_unroll({"theta": theta - sigma * z}, {"s": s[u]}, None, 0)
    grads.append((lp - lm) / (2 * sigma) * z)
  new_s = jnp.stack([ib_unroll(params, {"s": s[u]}, None, 0)[1]["s"] for u in range(pairs)])
  return jnp.mean(jnp.stack(grads), 0), new_s


def test_truncated_es_is_algorithm_1_of_the_pes_paper():
  pairs, sigma = 3, 0.01
  state = estimators.init_state(estimators.truncated_es, ib_init, jax.random.PRNGKey(0),
                                num_particles=2 * pairs, params=THETA_IB)
  s = jnp.ones((pairs, N_IB))
  assert state.inner["s"].shape == (pairs, N_IB)              # one state per pair
  for w in range(6):
    key = jax.random.PRNGKey(100 + w)
    g, state = estimators.truncated_es(ib_unroll, THETA_IB, state, key, sigma=sigma)
    ref, s = reference_truncated_es(THETA_IB, s, key, sigma, pairs)
    np.testing.assert_allclose(g["theta"], ref, rtol=2e-4, atol=1e-5)
    np.testing.assert_allclose(state.inner["s"], s, rtol=1e-6, atol=1e-6)


def test_truncated_es_variance_is_that_of_one_window():
  # One pair, at steady state after 200 windows, over 400 keys. The defect this
  # guards against (members unrolling from, and keeping, their own perturbed
  # states) had a per-pair variance ~15x the reference's at sigma = 0.01.
  sigma, reps = 0.01, 400

  def estimate(key, carry):
    state = estimators.init_state(estimators.truncated_es, ib_init, jax.random.PRNGKey(0),
                                  num_particles=2, params=THETA_IB)
    def body(state, k):
      g, state = estimators.truncated_es(ib_unroll, THETA_IB, state, k, sigma=sigma, carry=carry)
      return state, g["theta"][0]
    _, gs = jax.lax.scan(body, state, jax.random.split(key, 200))
    return gs[-1]

  def reference(key):
    s = ib_steady_state(0.5)[None]
    return reference_truncated_es(THETA_IB, s, key, sigma, 1)[0][0]

  keys = jax.random.split(jax.random.PRNGKey(7), reps)
  ref = np.asarray(jax.jit(jax.vmap(reference))(keys))
  for carry in ("unperturbed", "positive"):
    ours = np.asarray(jax.jit(jax.vmap(lambda k: estimate(k, carry)))(keys))
    # Both are a one-window ES estimate at (nearly) the same state: a variance
    # ratio of independent samples within an F(399, 399) band (p ~ 1e-4 each side).
    ratio = ours.var(ddof=1) / ref.var(ddof=1)
    assert 0.7 < ratio < 1.45, (carry, ratio, ours.var(), ref.var())
    # ... and the mean is TBPTT's -4 at steady state, not the true +24.
    se = ours.std(ddof=1) / np.sqrt(reps)
    assert abs(ours.mean() - (-4.0)) < 4 * se + 0.05, (carry, ours.mean(), se)


def test_influence_balancing_signs_against_the_exact_gradient():
  # At theta = 0.5, over a horizon of 200 one-step windows that starts at the
  # steady state of theta = 0.5: the exact gradient of the horizon's summed
  # loss is positive (~ +24 a window once theta's effect has propagated);
  # TBPTT (-4 a window) and truncated ES (TBPTT's mean) point the wrong way,
  # PES and NRES agree with it within their standard error.
  horizon = 200
  start = lambda key: {"s": ib_steady_state(0.5)}
  exact = float(jax.grad(estimators.full_unroll(ib_unroll, start, jax.random.PRNGKey(0),
                                                num_windows=horizon))(THETA_IB)["theta"][0])
  assert exact > 10 * horizon, exact

  def horizon_sum(name, key, sigma=0.01):
    state = estimators.init_state(getattr(estimators, name), start, key, num_particles=8,
                                  num_windows=horizon, params=THETA_IB)
    est = getattr(estimators, name)
    kw = {} if name == "truncated_backprop" else {"sigma": sigma}
    def body(state, k):
      g, state = est(ib_unroll, THETA_IB, state, k, init_inner=start, **kw)
      return state, g["theta"][0]
    _, gs = jax.lax.scan(body, state, jax.random.split(key, horizon))
    return gs.sum()

  keys = jax.random.split(jax.random.PRNGKey(11), 200)
  for name, sign in (("truncated_backprop", -1), ("truncated_es", -1), ("pes", 1),
                     ("noise_reuse_es", 1)):
    sums = np.asarray(jax.jit(jax.vmap(lambda k: horizon_sum(name, k)))(keys))
    mean, se = sums.mean(), sums.std(ddof=1) / np.sqrt(len(sums)) + 1e-6
    assert np.sign(mean) == sign and abs(mean) > 4 * se, (name, mean, se, exact)
    if name == "truncated_backprop":
      np.testing.assert_allclose(mean, -4.0 * horizon, rtol=1e-4)
    if sign > 0:       # unbiased for the horizon's gradient
      assert abs(mean - exact) < 4 * se, (name, mean, se, exact)


def test_stored_and_regenerated_pes_agree_under_stagger_from_the_first_call():
  key = jax.random.PRNGKey(3)
  states = {acc: estimators.init_state(estimators.pes, init_inner, key, num_particles=8,
                                       num_windows=4, params=THETA, unroll=unroll, stagger=True,
                                       accumulator=acc) for acc in ("store", "regenerate")}
  np.testing.assert_array_equal(states["store"].perturbed_from, [0, 0, 1, 1, 2, 2, 3, 3])
  step = jax.jit(lambda s, k: estimators.pes(unroll, THETA, s, k, sigma=0.05,
                                             init_inner=init_inner))
  for w in range(10):       # through every pair's first reset and beyond
    k = jax.random.fold_in(key, w)
    out = {acc: step(s, k) for acc, s in states.items()}
    np.testing.assert_allclose(out["regenerate"][0]["w"], out["store"][0]["w"],
                               rtol=1e-5, atol=1e-5, err_msg=f"call {w}")
    states = {acc: o[1] for acc, o in out.items()}


def test_a_finite_horizon_without_init_inner_is_refused_under_jit():
  state = estimators.init_state(estimators.pes, init_inner, jax.random.PRNGKey(0),
                                num_particles=2, num_windows=20, params=THETA)
  with pytest.raises(ValueError, match="init_inner"):
    jax.jit(lambda s: estimators.pes(unroll, THETA, s, jax.random.PRNGKey(0), sigma=0.1))(state)


def test_all_non_finite_gives_nan_not_zero():
  bad = lambda p, s, k, w: (jnp.nan * jnp.sum(p["w"]), s)
  for name, est in UNROLLED.items():
    state = estimators.init_state(getattr(estimators, name), init_inner, jax.random.PRNGKey(0),
                                  num_particles=4, params=THETA)
    g, state = est(bad, THETA, state, jax.random.PRNGKey(1))
    assert np.all(np.isnan(g["w"])), name
    assert np.all(np.isnan(state.loss)), name


# ------------------------------------------------------------------- horizons

def test_random_horizon_lengths_are_uniform_keyed_and_shared_by_pairs():
  horizon = estimators.RandomHorizon(2, 5)
  lengths = np.asarray(horizon.lengths(jax.random.split(jax.random.PRNGKey(0), 4000)))
  assert set(np.unique(lengths)) == {2, 3, 4, 5}
  # Uniform on {2..5}: mean 3.5, sd 1.118; each value 1/4 (5 standard errors).
  assert abs(lengths.mean() - 3.5) < 5 * 1.118 / np.sqrt(lengths.size)
  for value in (2, 3, 4, 5):
    assert abs(np.mean(lengths == value) - 0.25) < 5 * np.sqrt(0.25 * 0.75 / lengths.size)
  make = lambda: estimators.init_state(estimators.pes, init_inner, jax.random.PRNGKey(6),
                                       num_particles=16, num_windows=horizon, params=THETA)
  state = make()
  np.testing.assert_array_equal(state.length, make().length)      # same key, same lengths
  np.testing.assert_array_equal(state.length[::2], state.length[1::2])   # a pair shares it
  assert state.horizon == horizon


def test_random_horizon_resets_each_row_at_its_own_length():
  state = estimators.init_state(estimators.noise_reuse_es, init_inner, jax.random.PRNGKey(6),
                                num_particles=16, num_windows=estimators.RandomHorizon(1, 4),
                                params=THETA)
  step = jax.jit(lambda s, k: estimators.noise_reuse_es(unroll, THETA, s, k, sigma=0.05,
                                                        init_inner=init_inner))
  resets = 0
  for t in range(12):
    before = state
    _, state = step(state, jax.random.PRNGKey(100 + t))
    done = np.asarray(before.window) >= np.asarray(before.length)
    resets += done.sum()
    np.testing.assert_array_equal(state.window, np.where(done, 1, np.asarray(before.window) + 1))
    new_episode = np.any(np.asarray(state.episode_key) != np.asarray(before.episode_key), axis=-1)
    np.testing.assert_array_equal(new_episode, done)
    assert np.all(np.asarray(state.window) <= np.maximum(np.asarray(state.length), 1))
    np.testing.assert_array_equal(state.length[::2], state.length[1::2])
  assert resets > 16                       # every row restarted, most more than once


def _pes_run(key, horizon, steps, accumulator="store"):
  """The W-step gradients of PES from init_state(num_windows=horizon), jitted."""
  def run(key):
    state = estimators.init_state(estimators.pes, init_inner, key, num_particles=8,
                                  num_windows=horizon, params=THETA, accumulator=accumulator)
    def step(state, t):
      g, state = UNROLLED["pes"](unroll, THETA, state, jax.random.fold_in(key, t),
                                 init_inner=init_inner)
      return state, g["w"]
    return jax.lax.scan(step, state, jnp.arange(steps))[1]
  return np.asarray(jax.jit(run)(key))


def test_fixed_horizon_is_the_int_and_pes_accumulators_agree_under_a_random_one():
  key = jax.random.PRNGKey(3)
  np.testing.assert_array_equal(_pes_run(key, estimators.FixedHorizon(W), W),
                                _pes_run(key, W, W))
  # Past several resets (episodes of 1-3 windows), both accumulators agree.
  grads = {accumulator: _pes_run(key, estimators.RandomHorizon(1, 3), 7, accumulator)
           for accumulator in ("store", "regenerate")}
  np.testing.assert_allclose(grads["regenerate"], grads["store"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("horizon,match", [
    (estimators.RandomHorizon(5, 3), "min_windows <= max_windows"),
    (estimators.RandomHorizon(0, 3), "num_windows"),
    ((2, 5), "num_windows"),
    (0, "num_windows"),
])
def test_bad_horizons_name_the_argument(horizon, match):
  with pytest.raises(ValueError, match=match):
    estimators.init_state(estimators.pes, init_inner, jax.random.PRNGKey(0), num_particles=2,
                          num_windows=horizon, params=THETA)
