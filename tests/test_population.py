"""Shared population machinery: device-count invariance, shaping helpers."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metagrad import estimators
from metagrad.estimators import _auto_chunk, _noise, _shaping
from helpers import Quadratic, assert_unbiased, flat32, mean_over_keys

SHARDED = {
    "es": functools.partial(estimators.es, sigma=0.1, population=16, chunk_size=3),
    "es_centered_rank": functools.partial(estimators.es, sigma=0.1, population=16,
                                          shaping="centered_rank"),
    "es_wsr": functools.partial(estimators.es_wsr, population=24, chunk_size=2),
    "forward_gradient": functools.partial(estimators.forward_gradient, population=8),
    "finite_difference": functools.partial(estimators.finite_difference, chunk_size=2,
                                           step=1e-2, scheme="central"),
    "forward_mode": functools.partial(estimators.forward_mode, chunk_size=2),
}



def test_every_sharded_estimator_is_in_the_device_matrix():
  # The registry says which estimators take axis_name; each is run below.
  sharded = {name for name in estimators.FIRST_ORDER if estimators.REGISTRY[name].sharded}
  assert sharded <= set(SHARDED), sharded - set(SHARDED)

@pytest.mark.parametrize("name", sorted(SHARDED))
def test_same_result_on_1_2_4_8_devices(name):
  estimator = SHARDED[name]
  q = Quadratic(dim=7)  # 7 coordinates: not divisible by the device counts
  key = jax.random.PRNGKey(42)
  single = flat32(estimator(q.loss, q.params, key))
  for n in (1, 2, 4, 8):
    run = jax.pmap(lambda k: flat32(estimator(q.loss, q.params, k, axis_name="d")),
                   axis_name="d", devices=jax.devices()[:n])
    out = np.asarray(run(jnp.stack([key] * n)))
    for device_result in out:  # every device holds the full, identical gradient
      np.testing.assert_allclose(device_result, single, rtol=5e-5, atol=1e-5)


def test_shard_map_axis():
  from jax.sharding import Mesh, PartitionSpec as P
  q = Quadratic(dim=5)
  key = jax.random.PRNGKey(0)
  mesh = Mesh(np.array(jax.devices()[:4]), ("pop",))
  fn = jax.jit(jax.shard_map(lambda k: flat32(estimators.es_wsr(q.loss, q.params, k,
                                                                population=8,
                                                                axis_name="pop"))[None],
                             mesh=mesh, in_specs=P(), out_specs=P("pop")))
  out = np.asarray(fn(key))
  np.testing.assert_allclose(out[0], flat32(estimators.es_wsr(q.loss, q.params, key, population=8)),
                             rtol=1e-5, atol=1e-7)


def test_population_not_divisible_by_devices():
  q = Quadratic(dim=3)
  run = jax.pmap(lambda k: estimators.es(q.loss, q.params, k, sigma=0.1, population=6,
                                         axis_name="d"), axis_name="d", devices=jax.devices()[:4])
  with pytest.raises(ValueError, match=r"`population` \(6\) must split.*multiple of 8"):
    run(jnp.stack([jax.random.PRNGKey(0)] * 4))


def test_centered_ranks_ties_and_masks():
  v = jnp.array([3.0, 1.0, 2.0, 2.0, jnp.nan])
  r = _shaping.centered_ranks(v, jnp.isfinite(v))
  np.testing.assert_allclose(r, [0.5, -0.5, 0.0, 0.0, 0.0])


def test_antithetic_pairs_mirror():
  key = jax.random.PRNGKey(0)
  a = _noise.gaussian_direction(key, jnp.int32(4), 6, jnp.float32, antithetic=True)
  b = _noise.gaussian_direction(key, jnp.int32(5), 6, jnp.float32, antithetic=True)
  np.testing.assert_array_equal(a, -b)


def test_auto_chunk_size_fits_directions_in_cache_on_cpu():
  mib2 = _auto_chunk.NOISE_BYTES
  auto = lambda *a, **k: _auto_chunk.plan(*a, **k).chunk_size
  assert auto(32, 10_000, jnp.float32) is None      # 1.3 MB: all at once
  assert auto(32, 100_000, jnp.float32) == 4        # 5 fit -> 4
  # None fits: two at a time when the loss is compute-bound (an MLP on a batch: ~512 flops
  # per parameter; unknown flops count as compute-bound), unless two members' work is too
  # large; an elementwise loss (~7 flops per parameter) one at a time.
  assert auto(32, 1_000_000, jnp.float32) == 2
  assert auto(32, 1_000_000, jnp.float32, unit_flops=5.1e8) == 2
  assert auto(32, 1_000_000, jnp.float32, unit_flops=7e6) == 1
  assert auto(32, 1_000_000, jnp.float32, unit_bytes=200 * 2**20) == 1
  # Activation-heavy members (a conv ProtoNet episode: ~9.4 MiB each) run one at a time.
  assert auto(64, 7_248, jnp.float32, unit_bytes=9_870_000) == 1
  assert auto(64, 100_000, jnp.float32, unit_bytes=3_540_000) == 4
  assert auto(32, 100_000, jnp.float64) == 2
  chunk = auto(64, 30_000, jnp.float32)
  assert chunk * 30_000 * 4 <= mib2 < 2 * chunk * 30_000 * 4


def test_member_cost_tells_elementwise_from_matmul_losses():
  """The flops that steer the two-at-a-time rule come from XLA's cost analysis."""
  d = 4096
  elementwise = _auto_chunk.member_cost(lambda x: jnp.mean(jnp.sin(x) ** 2), jnp.zeros(d))
  w = jnp.ones((256, 64))
  matmul = _auto_chunk.member_cost(
      lambda x: jnp.mean((w @ x.reshape(64, -1)) ** 2), jnp.zeros(d))
  assert elementwise.temp_bytes >= 0 and matmul.temp_bytes >= 0
  assert 0 < elementwise.flops < _auto_chunk.PAIR_FLOPS * d <= matmul.flops


def test_auto_pairs_only_compute_bound_members_and_ignores_noise_flops():
  """At D = 1e6 (4 MB directions) an elementwise loss runs one member at a time
  and a matmul loss two: the rule reads the loss's flops, not the draw's."""
  d = 1_000_000
  x = jax.random.normal(jax.random.PRNGKey(0), (256, 1000))
  losses = {1: lambda p: jnp.mean(jnp.sin(p["w"]) ** 2),
            2: lambda p: jnp.mean((x @ p["w"].reshape(1000, 1000)) ** 2)}
  for expected, loss in losses.items():
    # The plan is static in the returned info: tracing shows it, nothing runs.
    info = jax.eval_shape(lambda p, k: estimators.es(loss, p, k, population=8,
                                                     return_info=True)[1],
                          {"w": jnp.zeros(d)}, jax.random.PRNGKey(1))
    assert info.chunk_plan == _auto_chunk.ChunkPlan(
        4, expected, True, info.chunk_plan.unit_bytes, info.chunk_plan.unit_flops)  # 4 pairs
    assert info.chunk_plan.unit_bytes > 0 and info.chunk_plan.unit_flops > 0


def test_auto_chunking_changes_only_summation_order():
  # 1.2 MB per direction and an elementwise loss: "auto" runs one member at a time.
  params = {"x": jnp.linspace(-1.0, 1.0, 300_000)}
  loss = lambda p: jnp.mean(jnp.sin(p["x"]) ** 2)
  key = jax.random.PRNGKey(0)
  run = lambda c: jax.jit(lambda p: estimators.es(loss, p, key, sigma=0.1, population=8,
                                                  shaping="centered_rank", chunk_size=c))(params)
  auto = run("auto")
  plan = jax.eval_shape(lambda p: estimators.es(loss, p, key, sigma=0.1, population=8,
                                                shaping="centered_rank",
                                                return_info=True)[1], params).chunk_plan
  assert plan.auto and plan.chunk_size == 1
  one, full = run(1), run(None)   # None: one chunk whose directions serve both passes
  np.testing.assert_array_equal(auto["x"], one["x"])
  np.testing.assert_allclose(auto["x"], full["x"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shaping,antithetic", [("standardize", False), ("standardize", True),
                                                ("none", True), ("none", False)])
def test_one_pass_sum_is_well_conditioned_with_large_loss_offsets(shaping, antithetic):
  # Losses ~1000 differing by ~1e-3: the one-pass sum shifts by the first
  # chunk's mean before accumulating. The loss (single float32 additions on
  # zero-centred parameters) is evaluated bit-identically by XLA and NumPy, so
  # a float64 two-pass sum of the same float32 losses isolates the
  # accumulation error.
  params = {"x": jnp.zeros(40)}
  loss = lambda p: 1000.0 + p["x"][0] + 0.5 * p["x"][1]
  key = jax.random.PRNGKey(9)
  population, sigma = 64, np.float32(1e-3)
  # Jitted, and the directions drawn by one vmapped program: eager, this test
  # compiled one small program per op and per direction (22 s -> 8 s cold, 4 cases).
  out = flat32(jax.jit(lambda p: estimators.es(
      loss, p, key, sigma=sigma, population=population, antithetic=antithetic, shaping=shaping,
      chunk_size=4))(params))
  per_unit = 2 if antithetic else 1
  units = jnp.arange(population // per_unit, dtype=jnp.int32)
  z = np.asarray(jax.jit(jax.vmap(lambda u: _noise.gaussian_direction(
      key, u, 40, jnp.float32, antithetic=False)))(units))
  signs = [1.0, -1.0][:per_unit]
  member = lambda s: np.float32(1000.0) + (np.float32(s) * sigma * z[:, 0]) + np.float32(0.5) * (
      np.float32(s) * sigma * z[:, 1])
  losses = np.stack([member(s) for s in signs], axis=1).astype(np.float64)
  if shaping == "standardize":
    w = (losses - losses.mean()) / losses.std()
  else:
    w = losses
  reference = (w @ np.array(signs)) @ z.astype(np.float64) / (losses.size * float(sigma))
  np.testing.assert_allclose(out, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())


def test_table_noise_moments_and_cross_member_correlation():
  size, units = 2_000, 64
  dirs = []
  for k in range(20):
    key = jax.random.PRNGKey(k)
    table = _noise.noise_table(key, size, jnp.float32)
    dirs.append(jax.vmap(lambda u: _noise.table_direction(table, key, u, size))(
        jnp.arange(units)))
  z = np.asarray(jnp.concatenate(dirs), np.float64)            # [20 * 64, size]
  n = z.size
  assert abs(z.mean()) < 5 / np.sqrt(n)                         # mean 0
  assert abs(z.var() - 1.0) < 5 * np.sqrt(2.0 / n)              # variance 1
  assert abs((z**4).mean() - 3.0) < 5 * np.sqrt(96.0 / n)      # Gaussian kurtosis
  # Two members of one call: the normalised dot product behaves like that of
  # independent directions (mean 0, std 1 / sqrt(D)).
  first = z.reshape(20, units, size)
  dots = np.einsum("kud,kvd->kuv", first, first) / size
  off = dots[:, ~np.eye(units, dtype=bool)]
  assert abs(off.mean()) < 5 * (1 / np.sqrt(size)) / np.sqrt(off.size / 2)
  assert 0.8 < off.std() * np.sqrt(size) < 1.2
  # ... and each coordinate, across the members of a call, is uncorrelated.
  corr = np.corrcoef(first[0].T[:200])
  assert np.abs(corr[~np.eye(200, dtype=bool)]).max() < 0.6


def test_es_with_table_noise_is_unbiased_for_the_smoothed_gradient():
  q = Quadratic(dim=6, seed=4)         # smoothing a quadratic adds a constant
  est = functools.partial(estimators.es, sigma=0.1, population=32, noise="table")
  samples = mean_over_keys(est, q.loss, q.params, 600)
  assert_unbiased(samples, flat32(q.grad()))


def test_table_noise_same_result_on_1_and_4_devices():
  q = Quadratic(dim=7)
  key = jax.random.PRNGKey(3)
  est = functools.partial(estimators.es_wsr, population=16, noise="table", chunk_size=2)
  single = flat32(est(q.loss, q.params, key))
  run = jax.pmap(lambda k: flat32(est(q.loss, q.params, k, axis_name="d")), axis_name="d",
                 devices=jax.devices()[:4])
  np.testing.assert_allclose(np.asarray(run(jnp.stack([key] * 4)))[0], single, rtol=5e-5,
                             atol=1e-6)


@pytest.mark.parametrize("name", sorted(SHARDED))
def test_shard_map_with_replicated_output(name):
  # out_specs=P(): every estimator's result is typed as replicated over the
  # axis (all-reduced, or gathered by psum), so shard_map accepts it as is.
  from jax.sharding import PartitionSpec as P
  estimator = SHARDED[name]
  q = Quadratic(dim=7)
  key = jax.random.PRNGKey(42)
  mesh = jax.make_mesh((4,), ("d",), devices=jax.devices()[:4])
  fn = jax.jit(jax.shard_map(lambda p, k: estimator(q.loss, p, k, axis_name="d"), mesh=mesh,
                             in_specs=(P(), P()), out_specs=P()))
  np.testing.assert_allclose(flat32(fn(q.params, key)), flat32(estimator(q.loss, q.params, key)),
                             rtol=5e-5, atol=1e-5)
