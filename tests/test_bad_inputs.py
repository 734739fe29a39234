"""Every bad input a user can make gets a ValueError naming the argument.

One row per mistake (the calls of the hardening issue plus every public
function's documented constraints), the integer scalars users pass from
configs and arrays (accepted), and a random fuzz of the task samplers: a
valid result satisfying the sampler's invariants, or a ValueError -- never
anything else.
"""

import functools

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metagrad import estimators, models, tasks

KEY = jax.random.PRNGKey(0)
IMAGES = jnp.zeros((6, 5, 16, 16, 1))          # 6 classes x 5 examples
BIG = np.random.default_rng(0).uniform(size=(12, 20, 28, 28, 1)).astype(np.float32)
POOL = jnp.ones((4, 3))
MLP = models.mlp(hidden=(4,))
MLP_PARAMS = MLP.init(KEY, jnp.ones((1, 1)))
MSE = lambda p: jnp.mean((MLP.apply(p, jnp.ones((3, 1))) - 1.0) ** 2)
EMB = jnp.ones((4, 2))


def _episode(query_y):
  return tasks.Episode(jnp.ones((4, 16, 16, 1)), jnp.array([0, 1, 0, 1]),
                       jnp.ones((2, 16, 16, 1)), jnp.asarray(query_y))


def _traced_shot():
  return jax.jit(lambda s: tasks.sample_sine_task(KEY, shot=s))(3)


def _conv4_apply(images, **kw):
  net = models.conv4(channels=2, **kw)
  return net.init(KEY, images)


BAD = [
    # tasks: episodes
    ("shot", lambda: tasks.sample_episode(KEY, IMAGES, way=2, shot=True, query=1)),
    ("way", lambda: tasks.sample_episode(KEY, IMAGES, way=2.0, shot=1, query=1)),
    ("query", lambda: tasks.sample_episode(KEY, IMAGES, way=2, shot=1, query=0)),
    ("way", lambda: tasks.sample_episode(KEY, IMAGES, way=7, shot=1, query=1)),
    ("shot", lambda: tasks.sample_episode(KEY, IMAGES, way=2, shot=4, query=2)),
    ("images", lambda: tasks.sample_episode(KEY, IMAGES[0], way=2, shot=1, query=1)),
    ("num", lambda: tasks.sample_episodes(KEY, IMAGES, num=0, way=2, shot=1, query=1)),
    # tasks: sine
    ("shot", lambda: tasks.sample_sine_task(KEY, shot=2.5)),
    ("query", lambda: tasks.sample_sine_task(KEY, query=0)),
    ("shot", _traced_shot),
    ("num", lambda: tasks.sample_sine_tasks(KEY, num=-1)),
    # tasks: linear classification
    ("shot", lambda: tasks.sample_from_pool(KEY, POOL, shot=-1, query=2)),
    ("shot", lambda: tasks.sample_linear_task(KEY, POOL[0], shot=-1, query=2)),
    ("query", lambda: tasks.sample_linear_task(KEY, POOL[0], shot=2, query=0)),
    ("dim", lambda: tasks.make_task_pools(KEY, dim=0)),
    ("num_test", lambda: tasks.make_task_pools(KEY, num_test=0)),
    ("pool", lambda: tasks.sample_from_pool(KEY, jnp.ones((0, 3)), shot=1, query=1)),
    ("pool", lambda: tasks.sample_from_pool(KEY, jnp.ones(3), shot=1, query=1)),
    ("points", lambda: tasks.sample_linear_task(KEY, POOL[0], shot=2, query=2,
                                                points=jnp.ones((3, 3)))),
    ("points", lambda: tasks.sample_linear_task(KEY, POOL[0], shot=2, query=2,
                                                points=jnp.ones((8, 4)))),
    # tasks: rotation
    ("num_val", lambda: tasks.rotation_task(BIG, num_classes=3, num_train=12, num_val=-2)),
    ("num_train", lambda: tasks.rotation_task(BIG, num_classes=3, num_train=0, num_val=4)),
    ("num_train", lambda: tasks.rotation_task(BIG, num_classes=3, num_train=16, num_val=4)),
    ("num_classes", lambda: tasks.rotation_task(BIG, num_classes=13)),
    ("num_classes", lambda: tasks.rotation_task(BIG, num_classes=1)),
    ("images", lambda: tasks.rotation_task(BIG[0], num_classes=3)),
    # tasks: omniglot
    ("data_dir", lambda: tasks.load_omniglot(data_dir="/nonexistent/tfds")),
    ("image_size", lambda: tasks.load_omniglot(image_size=64)),
    ("split", lambda: tasks.omniglot_splits(np.zeros((1623, 1, 2, 2, 1)), split="random")),
    ("images", lambda: tasks.omniglot_splits(np.zeros((100, 1, 2, 2, 1)))),
    # models: networks
    ("images", lambda: _conv4_apply(jnp.ones((2, 8, 8, 1)), num_blocks=4)),
    ("num_classes", lambda: models.conv4(num_classes=0)),
    ("channels", lambda: models.conv4(channels=0)),
    ("num_blocks", lambda: models.conv4(num_blocks=5)),
    ("pooling", lambda: models.conv4(pooling="max")),
    ("hidden", lambda: models.mlp(hidden=(0,))),
    ("num_outputs", lambda: models.logistic_regression(0)),
    ("num_classes", lambda: models.lenet(0)),
    ("images", lambda: models.lenet(3).init(KEY, jnp.ones((1, 8, 8, 1)))),
    # models: protonet
    ("labels", lambda: models.protonet.prototypes(EMB, jnp.array([0, 1, 2, 5]), 3)),
    ("labels", lambda: models.protonet.prototypes(EMB, jnp.array([0, 1, -1, 0]), 3)),
    ("labels", lambda: models.protonet.prototypes(EMB, jnp.array([0, 1]), 3)),
    ("labels", lambda: models.protonet.prototypes(EMB, jnp.array([0.0, 1, 0, 1]), 2)),
    ("labels", lambda: models.protonet.loss(jnp.zeros((2, 3)), jnp.array([0, 3]))),
    ("query_y", lambda: models.protonet.episode_loss(
        lambda p, x: x.reshape(x.shape[0], -1), None, _episode([0, 2]), way=2)),
    ("way", lambda: models.protonet.episode_loss(
        lambda p, x: x.reshape(x.shape[0], -1), None, _episode([0, 1]), way=5)),
    ("distance", lambda: models.protonet.logits(EMB, EMB, distance="manhattan")),
    # models: inner loops and rules
    ("lr", lambda: models.sgd("0.01")),
    ("lr", lambda: models.sgd(-0.1)),
    ("init_lr", lambda: models.meta_sgd(0.0)),
    ("rule_params", lambda: models.adapt(MSE, MLP_PARAMS, models.meta_sgd(0.1), {}, steps=1)),
    ("loss_fn", lambda: models.adapt(lambda p: MLP.apply(p, jnp.ones((3, 1))), MLP_PARAMS,
                                     models.sgd(0.1), {}, steps=1)),
    ("params", lambda: models.adapt(lambda p: p["w"].sum() * 1.0, {"w": jnp.arange(3)},
                                    models.sgd(0.1), {}, steps=1)),
    ("steps", lambda: models.adapt(MSE, MLP_PARAMS, models.sgd(0.1), {}, steps=-1)),
    ("steps", lambda: models.adapt(MSE, MLP_PARAMS, models.sgd(0.1), {}, steps=2.0)),
    ("first_order", lambda: models.adapt(MSE, MLP_PARAMS, models.sgd(0.1), {}, steps=1,
                                         first_order="yes")),
    ("checkpoint_every", lambda: models.adapt(MSE, MLP_PARAMS, models.sgd(0.1), {}, steps=4,
                                              checkpoint_every=0)),
    ("rule", lambda: models.adapt(MSE, MLP_PARAMS, lambda *a: a, {}, steps=1)),
    ("num_steps", lambda: models.turtle(inputs=("gradient", "time"))),
    ("inputs", lambda: models.turtle(inputs=("gradient", "hessian"))),
    ("inputs", lambda: models.turtle(inputs="gradient")),
    ("beta", lambda: models.turtle(beta=1.5)),
    ("num_layers", lambda: models.kfc(0.1, num_layers=0)),
    ("rank", lambda: models.cfc(0.1, rank=0)),
    ("lr", lambda: models.klin(-1.0)),
    ("optimizer_lr", lambda: models.klin(0.1, optimizer_lr=0.0)),
    ("lr", lambda: models.gradient_descent_params(1.5)),
    ("preprocess_p", lambda: models.meta_lstm(preprocess_p=0.0)),
    # estimators: the mistakes of a first hour
    ("key", lambda: estimators.es(MSE, MLP_PARAMS, 0, sigma=0.1, population=4)),
    ("key", lambda: estimators.es_wsr(MSE, MLP_PARAMS, jnp.zeros(3, jnp.uint32))),
    ("key", lambda: estimators.forward_gradient(MSE, MLP_PARAMS, jax.random.split(KEY, 2))),
    ("key", lambda: estimators.evograd(lambda p, h: MSE(p), lambda p, h: MSE(p), MLP_PARAMS,
                                       jnp.ones(1), 7)),
    ("axis_name", lambda: estimators.es(MSE, MLP_PARAMS, KEY, sigma=0.1, population=4,
                                        axis_name="devices")),
    ("axis_name", lambda: estimators.forward_mode(MSE, MLP_PARAMS, KEY, axis_name="devices")),
    ("antithetic", lambda: estimators.es(MSE, MLP_PARAMS, KEY, sigma=0.1, population=4,
                                         antithetic="yes")),
    ("has_aux", lambda: estimators.backprop(MSE, MLP_PARAMS, has_aux=1)),
    ("loss_fn", lambda: estimators.es_wsr(MSE, MLP_PARAMS, KEY, has_aux=True)),
    ("loss_fn", lambda: estimators.forward_mode(lambda p: (MSE(p), 1.0), MLP_PARAMS)),
    ("population", lambda: estimators.finite_difference(MSE, MLP_PARAMS, KEY, population=0)),
    ("population", lambda: estimators.finite_difference(MSE, MLP_PARAMS, KEY,
                                                        population=10**6)),
    ("population", lambda: estimators.es(MSE, MLP_PARAMS, KEY, sigma=0.1, population=True)),
    ("noise", lambda: estimators.es(MSE, MLP_PARAMS, KEY, sigma=0.1, population=4,
                                    noise="tabel")),
    # The population the user passed (6), not its pair count, over 2 devices.
    (r"`population` \(6\)", lambda: jax.vmap(
        lambda _: estimators.es(MSE, MLP_PARAMS, KEY, population=6, axis_name="d"),
        axis_name="d")(jnp.arange(2))),
    ("key.*batch of keys.*pass one key",
     lambda: estimators.es_wsr(MSE, MLP_PARAMS, jax.random.split(KEY, 3))),
    ("adapted.*meta_params", lambda: estimators.imaml(
        MSE, MSE, {"w": jnp.ones(3)}, MLP_PARAMS, reg=1.0)),
]


# ---------------------------------------------------------------- unrolled estimators
def _ib_unroll(params, inner, key, window):
  s = 0.5 * inner["s"] + params["theta"][0]
  return (s[0] - 1.0) ** 2, {"s": s}


_IB_INIT = lambda key: {"s": jnp.ones(3)}
_IB_THETA = {"theta": jnp.array([0.5])}


def _state(name, **kw):
  kw.setdefault("params", _IB_THETA)
  return estimators.init_state(getattr(estimators, name), _IB_INIT, KEY,
                               num_particles=kw.pop("num_particles", 4), **kw)


def _call(name, state=None, params=_IB_THETA, key=KEY, jit=False, **kw):
  state = _state(name) if state is None else state
  if name != "truncated_backprop":
    kw.setdefault("sigma", 0.1)
  fn = lambda s: getattr(estimators, name)(_ib_unroll, params, s, key, **kw)
  return jax.jit(fn)(state) if jit else fn(state)


UNROLLED_BAD = [
    ("key", lambda: estimators.init_state(estimators.pes, _IB_INIT, 0, num_particles=2,
                                          params=_IB_THETA)),
    ("key.*batch", lambda: estimators.init_state(estimators.pes, _IB_INIT,
                                                 jax.random.split(KEY, 4), num_particles=2,
                                                 params=_IB_THETA)),
    ("key", lambda: _call("pes", key=7)),
    ("key.*batch", lambda: _call("truncated_backprop", key=jax.random.split(KEY, 2))),
    ("init_inner", lambda: estimators.init_state(estimators.pes, None, KEY, num_particles=2,
                                                 params=_IB_THETA)),
    # a state made for another estimator
    ("state.*init_state\(truncated_backprop", lambda: _call(
        "pes", state=_state("truncated_backprop"))),
    ("state.*init_state\(noise_reuse_es", lambda: _call("pes", state=_state("noise_reuse_es"))),
    ("state.*init_state\(pes", lambda: _call("truncated_es", state=_state("pes"), jit=True)),
    # params of another structure or shape than init_state saw
    ("params", lambda: _call("pes", params={"theta": jnp.ones(4)})),
    ("params", lambda: _call("noise_reuse_es", params={"other": jnp.ones(1)}, jit=True)),
    ("params", lambda: _call("truncated_backprop", params={"theta": jnp.ones(1, jnp.bfloat16)})),
    # a PES accumulator whose width is not the params' (a state without a signature)
    ("accumulator", lambda: _call("pes", state=_state("pes")._replace(
        params_signature=None, accumulator=jnp.zeros((2, 4))))),
    # a finite horizon with nothing to reset to: refused at trace time, jitted or not
    ("init_inner", lambda: _call("pes", state=_state("pes", num_windows=20))),
    ("init_inner", lambda: _call("truncated_backprop", state=_state("truncated_backprop",
                                                                  num_windows=3), jit=True)),
    ("init_inner", lambda: _call("truncated_es", state=_state("truncated_es", num_windows=3),
                                 jit=True)),
    ("carry", lambda: _call("truncated_es", carry="negative")),
    ("sigma", lambda: _call("noise_reuse_es", sigma=0.0)),
    ("estimator", lambda: estimators.init_state(estimators.es, _IB_INIT, KEY, num_particles=2)),
    ("num_particles", lambda: _state("truncated_es", num_particles=3)),
    ("num_particles.*multiple of 4", lambda: jax.vmap(
        lambda _: _state("pes", num_particles=6, axis_name="d"), axis_name="d")(jnp.arange(2))),
]


@pytest.mark.parametrize("arg,call", UNROLLED_BAD,
                         ids=[f"{i}-{a.split('.')[0]}" for i, (a, _) in enumerate(UNROLLED_BAD)])
def test_unrolled_bad_input_raises_value_error_naming_the_argument(arg, call):
  with pytest.raises(ValueError, match=arg):
    call()


def test_unrolled_state_accepts_a_partial_of_its_estimator():
  state = estimators.init_state(functools.partial(estimators.pes, sigma=0.1), _IB_INIT, KEY,
                                num_particles=2, params=_IB_THETA)
  assert state.estimator == "pes"


NAN_LOSS = lambda p: jnp.nan * MSE(p)
ALL_NON_FINITE = {
    "es": lambda: estimators.es(NAN_LOSS, MLP_PARAMS, KEY, population=4),
    "es centered_rank": lambda: estimators.es(NAN_LOSS, MLP_PARAMS, KEY, population=4,
                                              shaping="centered_rank"),
    "es_wsr": lambda: estimators.es_wsr(NAN_LOSS, MLP_PARAMS, KEY, population=4),
    "forward_gradient": lambda: estimators.forward_gradient(NAN_LOSS, MLP_PARAMS, KEY,
                                                            population=3),
    "finite_difference": lambda: estimators.finite_difference(NAN_LOSS, MLP_PARAMS),
    "evograd": lambda: estimators.evograd(lambda p, h: NAN_LOSS(p) * h[0], lambda p, h: MSE(p),
                                          MLP_PARAMS, jnp.ones(1), KEY),
}


@pytest.mark.parametrize("name", sorted(ALL_NON_FINITE))
def test_an_all_non_finite_population_gives_nan_not_a_silent_zero(name):
  grads = jax.jit(ALL_NON_FINITE[name])()
  assert all(np.all(np.isnan(g)) for g in jax.tree_util.tree_leaves(grads)), name


def test_a_partly_non_finite_population_leaves_the_bad_members_out():
  # Members pushed more than 1.5 sigma from b = 0.3 (about 13% of them) have a
  # NaN loss; the rest still give a finite estimate of the slope's sign (+0.6).
  loss = lambda p: jnp.where(jnp.abs(p["b"][0] - 0.3) > 0.15, jnp.nan, jnp.sum(p["b"] ** 2))
  g = estimators.es(loss, {"b": jnp.array([0.3])}, KEY, sigma=0.1, population=256,
                    antithetic=False)["b"]
  assert np.isfinite(g[0]) and g[0] > 0, g


def test_return_info_counts_the_non_finite_members_exactly():
  # es_wsr member i is theta + sigma z_i, z_i = normal(fold_in(key, i)): count by hand.
  theta, sigma, population = {"b": jnp.zeros(4)}, 0.1, 32
  loss = lambda p: jnp.where(p["b"][0] > 0.05, jnp.nan, jnp.sum(p["b"] ** 2))
  z = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(KEY, i), (4,)))(
      jnp.arange(population))
  expected = int(jnp.sum(sigma * z[:, 0] > 0.05))
  assert 0 < expected < population
  for jit in (False, True):
    fn = lambda p: estimators.es_wsr(loss, p, KEY, sigma=sigma, population=population,
                                     return_info=True, has_aux=False)
    grads, info = (jax.jit(fn) if jit else fn)(theta)
    assert info.members == population and int(info.nonfinite) == expected
    assert np.all(np.isfinite(grads["b"]))
  # FD: exactly the one coordinate whose nudge makes the loss NaN is left out.
  fd_loss = lambda p: jnp.where(p["b"][0] != 0, jnp.nan, jnp.sum(p["b"] ** 2))
  (grads, aux, info) = estimators.finite_difference(lambda p: (fd_loss(p), 1.0), theta,
                                                    has_aux=True, return_info=True)
  assert (info.members, int(info.nonfinite), aux) == (4, 1, 1.0)
  _, info = estimators.forward_gradient(NAN_LOSS, MLP_PARAMS, KEY, population=3,
                                        return_info=True)
  assert (info.members, int(info.nonfinite)) == (3, 3)
  _, info = estimators.es(NAN_LOSS, MLP_PARAMS, KEY, population=4, shaping="centered_rank",
                          return_info=True)
  assert (info.members, int(info.nonfinite)) == (4, 4)


@pytest.mark.parametrize("arg,call", BAD, ids=[f"{i}-{a}" for i, (a, _) in enumerate(BAD)])
def test_bad_input_raises_value_error_naming_the_argument(arg, call):
  with pytest.raises(ValueError, match=arg):
    call()


ACCEPTED = [
    lambda: tasks.sample_episode(KEY, IMAGES, way=np.int64(2), shot=np.int32(1),
                                 query=jnp.int32(1)),
    lambda: models.adapt(MSE, MLP_PARAMS, models.sgd(0.1), {}, steps=np.int64(2)),
    lambda: tasks.sample_sine_task(KEY, shot=np.int16(3), query=jnp.asarray(4)),
    lambda: tasks.sample_from_pool(KEY, POOL, shot=np.int64(2), query=np.uint8(3)),
    lambda: models.conv4(channels=np.int64(2), num_classes=np.int32(3)),
    lambda: estimators.es(MSE, MLP_PARAMS, KEY, sigma=0.1, population=np.int64(4)),
    lambda: estimators.es_wsr(MSE, MLP_PARAMS, jax.random.key(0)),           # typed key
    lambda: estimators.es(lambda p: 1.0, MLP_PARAMS, KEY, sigma=0.1, population=4),  # float loss
    lambda: models.turtle(inputs=("gradient", "time"), num_steps=np.int64(5)),
]


@pytest.mark.parametrize("call", ACCEPTED)
def test_integer_scalars_typed_keys_and_float_losses_are_accepted(call):
  jax.block_until_ready(call())


def test_traced_labels_are_checked_with_checkify():
  from jax.experimental import checkify
  fn = jax.jit(checkify.checkify(
      lambda y: models.protonet.check_labels(y, 3) or jnp.sum(y)))
  err, _ = fn(jnp.array([0, 1, 2]))
  err.throw()                                          # fine
  err, _ = fn(jnp.array([0, 1, 3]))
  with pytest.raises(checkify.JaxRuntimeError, match="labels"):
    err.throw()


def test_wrong_data_dir_raises_even_with_a_cache(tmp_path, omniglot):
  # `omniglot` (the fixture) filled the default cache; a wrong directory must
  # still be refused rather than served from it.
  with pytest.raises(tasks.DatasetNotFoundError, match="/wrong/place"):
    tasks.load_omniglot(data_dir="/wrong/place")


def test_omniglot_cache_key_changes_with_decoding_code(monkeypatch):
  from metagrad.tasks import _omniglot as omniglot
  from metagrad.tasks._omniglot import _cache_key, _data_dir
  source = _data_dir(None)
  before = _cache_key(source, 28)
  assert before != _cache_key(source, 32)
  monkeypatch.setattr(omniglot.inspect, "getsource", lambda fn: "def _decode_all(): pass")
  assert _cache_key(source, 28) != before


# ------------------------------------------------------------ fuzzing the samplers
ARG = st.one_of(st.integers(-3, 12), st.booleans(), st.floats(-2, 8), st.none(),
                st.integers(0, 12).map(np.int64), st.sampled_from(["3"]))


def _valid_or_value_error(call, check):
  try:
    out = call()
  except ValueError:
    return
  check(out)


@hypothesis.given(way=ARG, shot=ARG, query=ARG)
def test_fuzz_sample_episode(way, shot, query):
  def check(ep):
    w, s, q = int(way), int(shot), int(query)
    assert ep.support_x.shape == (w * s, 16, 16, 1) and ep.query_x.shape == (w * q, 16, 16, 1)
    counts = np.bincount(np.asarray(ep.support_y), minlength=w)
    assert counts.tolist() == [s] * w
    assert np.bincount(np.asarray(ep.query_y), minlength=w).tolist() == [q] * w
  _valid_or_value_error(lambda: tasks.sample_episode(KEY, IMAGES, way=way, shot=shot,
                                                     query=query), check)


@hypothesis.given(shot=ARG, query=ARG)
def test_fuzz_sample_sine_task(shot, query):
  def check(t):
    assert t.support_x.shape == (int(shot), 1) and t.query_x.shape == (int(query), 1)
    np.testing.assert_allclose(t.support_y, t.amplitude * np.sin(t.support_x - t.phase),
                               rtol=1e-5, atol=1e-5)
  _valid_or_value_error(lambda: tasks.sample_sine_task(KEY, shot=shot, query=query), check)


@hypothesis.given(shot=ARG, query=ARG, shared=st.booleans())
def test_fuzz_sample_from_pool(shot, query, shared):
  points = jnp.asarray(np.random.default_rng(1).normal(size=(9, 3)), jnp.float32) if shared else None

  def check(t):
    assert t.support_x.shape == (int(shot), 3) and t.query_x.shape == (int(query), 3)
    x = np.concatenate([t.support_x, t.query_x])
    y = np.concatenate([t.support_y, t.query_y])
    np.testing.assert_array_equal(y, (x @ np.asarray(t.boundary) > 0).astype(int))
  _valid_or_value_error(lambda: tasks.sample_from_pool(KEY, POOL, shot=shot, query=query,
                                                       points=points), check)


@hypothesis.given(num_classes=ARG, num_train=ARG, num_val=ARG)
def test_fuzz_rotation_task(num_classes, num_train, num_val):
  def check(t):
    c, n, v = int(num_classes), int(num_train), int(num_val)
    assert t.train_x.shape[0] == c * n and t.val_x.shape[0] == c * v
    assert t.test_x.shape[0] == c * (20 - n - v) > 0
  _valid_or_value_error(lambda: tasks.rotation_task(BIG, num_classes=num_classes,
                                                    num_train=num_train, num_val=num_val), check)


# ------------------------------------------------------ deprecated keyword names
# One name per family for "how many members" (population) and one noise
# vocabulary ("normal" | "table" | "sign"); the old spellings work for one
# release with a DeprecationWarning pointing at the caller, and give the same
# numbers.

DEPRECATED = {
    "num_directions": (
        lambda: estimators.forward_gradient(MSE, MLP_PARAMS, KEY, num_directions=3),
        lambda: estimators.forward_gradient(MSE, MLP_PARAMS, KEY, population=3)),
    "num_coordinates": (
        lambda: estimators.finite_difference(MSE, MLP_PARAMS, KEY, num_coordinates=5),
        lambda: estimators.finite_difference(MSE, MLP_PARAMS, KEY, population=5)),
    "gaussian": (
        lambda: estimators.member_noise(KEY, 3, MLP_PARAMS, sigma=0.1, noise="gaussian"),
        lambda: estimators.member_noise(KEY, 3, MLP_PARAMS, sigma=0.1, noise="normal")),
}


@pytest.mark.parametrize("old", sorted(DEPRECATED))
def test_deprecated_names_warn_at_the_caller_and_mean_the_same(old):
  deprecated, current = DEPRECATED[old]
  with pytest.warns(DeprecationWarning, match=old) as record:
    got = deprecated()
  assert record[0].filename == __file__       # the warning points at this call
  chex.assert_trees_all_equal(got, current())


def test_a_deprecated_and_a_current_name_together_is_an_error():
  with pytest.raises(ValueError, match="`num_directions`.*`population`"):
    estimators.forward_gradient(MSE, MLP_PARAMS, KEY, population=4, num_directions=3)


def test_member_noise_refuses_a_typo():
  with pytest.raises(ValueError, match="noise"):
    estimators.member_noise(KEY, 0, MLP_PARAMS, sigma=0.1, noise="gausian")
