"""Meta-learning a rotation with EvoGrad (evograd.txt section 4.2), on Omniglot.

Validation and test images are rotated by 30 degrees; the training images
are rotated by a learned angle lambda (a hyperparameter, init 0) before the
base LeNet sees them. Online meta-learning: each base step on theta is
followed by a hypergradient step on lambda, estimated by EvoGrad (K = 2,
tau = 0.05, sigma = 0.001, sign noise) or by second-order T1-T2.
A baseline keeps lambda = 0. MNIST (the paper's data) cannot be downloaded
here, so Omniglot characters are the classes (``tasks.rotation_task``).

    python -m examples.evograd_rotation --hypergrad evograd --steps 1500
"""

from __future__ import annotations

import copy
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

from examples import common
from metagrad import estimators, models, tasks


def main(argv=None):
  parser = common.base_parser(__doc__, steps=1500, out="runs/evograd_rotation")
  parser.add_argument("--hypergrad", choices=("evograd", "t1_t2"), default="evograd")
  parser.add_argument("--angle", type=float, default=30.0, help="true val/test rotation")
  parser.add_argument("--classes", type=int, default=20)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--lr", type=float, default=3e-4, help="Adam lr of the LeNet")
  parser.add_argument("--hyper_lr", type=float, default=1.0, help="Adam lr of lambda (degrees)")
  parser.add_argument("--population", type=int, default=2)
  parser.add_argument("--temperature", type=float, default=0.05)
  parser.add_argument("--sigma", type=float, default=1e-3)
  parser.add_argument("--inner_lr", type=float, default=0.1, help="T1-T2 lookahead step")
  args = parser.parse_args(argv)
  common.apply_smoke(args, argv, steps=4, classes=10, log_every=2, checkpoint_every=2)
  common.positive_flags(args, "steps", "classes", "batch", "lr", "hyper_lr", "temperature",
                        "sigma", "inner_lr")
  images = tasks.load_omniglot(verbose=True)
  if args.classes > images.shape[0]:
    raise SystemExit(f"error: --classes exceeds the {images.shape[0]} characters")
  task = tasks.rotation_task(images, num_classes=args.classes, angle=args.angle, seed=args.seed)
  net = models.lenet(args.classes)
  ce = lambda p, x, y: optax.softmax_cross_entropy_with_integer_labels(net.apply(p, x), y).mean()

  def train_loss_on(x, y):
    return lambda p, lam: ce(p, tasks.rotate(x, lam), y)

  def hypergradient(theta, lam, xt, yt, xv, yv, key):
    train_loss, val_loss = train_loss_on(xt, yt), (lambda p, _: ce(p, xv, yv))
    if args.hypergrad == "evograd":
      return estimators.evograd(train_loss, val_loss, theta, lam, key, population=args.population,
                                sigma=args.sigma, temperature=args.temperature, noise="sign")
    return estimators.t1_t2(train_loss, val_loss, theta, lam, key, inner_lr=args.inner_lr)

  opt, hyper_opt = optax.adam(args.lr), optax.adam(args.hyper_lr)

  def make_step(learn_angle: bool):
    # The images enter as an argument, not as constants closed over by jit.
    @jax.jit
    def step(state, key, data):
      theta, lam, opt_state, hyper_state = state
      kt, kv, kh = jax.random.split(key, 3)
      it = jax.random.choice(kt, data.train_y.shape[0], (args.batch,), replace=False)
      iv = jax.random.choice(kv, data.val_y.shape[0], (min(args.batch, data.val_y.shape[0]),),
                             replace=False)
      xt, yt, xv, yv = data.train_x[it], data.train_y[it], data.val_x[iv], data.val_y[iv]
      loss, grads = jax.value_and_grad(train_loss_on(xt, yt))(theta, lam)
      updates, opt_state = opt.update(grads, opt_state)
      theta = optax.apply_updates(theta, updates)
      if learn_angle:
        hg = hypergradient(theta, lam, xt, yt, xv, yv, kh)
        hupdates, hyper_state = hyper_opt.update(hg, hyper_state)
        lam = optax.apply_updates(lam, hupdates)
      return (theta, lam, opt_state, hyper_state), {"train_loss": loss, "angle": lam}
    return lambda state, key: step(state, key, task)

  accuracy = jax.jit(lambda p, x, y: jnp.mean(jnp.argmax(net.apply(p, x), -1) == y))
  results = {}
  for name, learn in (("baseline", False), (args.hypergrad, True)):
    theta = jax.jit(net.init)(jax.random.PRNGKey(args.seed), task.train_x[:2])
    lam = jnp.zeros(())
    state = (theta, lam, opt.init(theta), hyper_opt.init(lam))
    run_args = copy.copy(args)
    run_args.out = str(pathlib.Path(args.out) / name)
    state = common.train(
        run_args, state=state, step_fn=make_step(learn), name=f"rotation: {name}",
        metric_every=lambda s, i: {"val_acc": accuracy(s[0], task.val_x, task.val_y)})
    test_acc = float(accuracy(state[0], task.test_x, task.test_y))
    results[name] = {"test_accuracy": test_acc, "learned_angle": float(state[1])}
    print(f"{name}: rotated-test accuracy {test_acc:.4f}, angle {float(state[1]):.2f} deg",
          flush=True)
  common.write_results(args, {"true_angle": args.angle, "runs": results})


if __name__ == "__main__":
  main()
