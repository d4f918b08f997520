import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from taba_jax import train
from taba_jax.data.synthetic import synthetic_dataset, task_specs
from taba_jax.models import AdaShareNet, MultiTaskNet, parameter_counts
from taba_jax.models.adashare import PolicyLearning, discrete_policy
from test_train import tiny_config


def random_params(model, images, seed=0):
    """Parameters of `model` drawn with NumPy: no compiled init (slow to compile on a CPU)."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), images)
    generator = np.random.default_rng(seed)
    return jax.tree.map(lambda s: generator.normal(0.0, 0.5, s.shape).astype(s.dtype), shapes)


def learning(**overrides):
    values = dict(num_blocks=3, steps=100, warmup_steps=10, curriculum_fraction=0.5, initial_temperature=5.0,
                  final_temperature=0.01, sparsity_weight=1.0, sharing_weight=1.0, learning_rate=0.1)
    return PolicyLearning(**{**values, **overrides})


def test_every_task_gets_the_shape_of_hard_sharing_and_all_selected_is_as_large():
    tasks = tuple(task_specs())
    images = np.zeros((3, 16, 16, 3), np.float32)
    model, hard = AdaShareNet(tasks, widths=(8, 16)), MultiTaskNet(tasks, widths=(8, 16))
    params = jax.eval_shape(model.init, jax.random.key(0), images)
    hard_params = jax.eval_shape(hard.init, jax.random.key(0), images)
    outputs = jax.eval_shape(model.apply, params, images)
    expected = jax.eval_shape(hard.apply, hard_params, images)
    assert {k: v.shape for k, v in outputs.items()} == {k: v.shape for k, v in expected.items()}
    assert parameter_counts(params) == parameter_counts(hard_params)  # one backbone, however many paths
    assert sorted(params["params"]) == ["backbone", "heads"]


def test_fixed_policy_paths_equal_zero_one_gates_and_skipped_blocks_are_not_computed():
    tasks = tuple(task_specs(["segment", "depth"]))
    images = np.random.default_rng(1).normal(size=(2, 16, 16, 3)).astype(np.float32)
    policy = ((True, False, True), (False, True, True))  # every block selected by some task
    fixed, free = AdaShareNet(tasks, widths=(8, 16), policy=policy), AdaShareNet(tasks, widths=(8, 16))
    params = random_params(fixed, images)
    by_policy = jax.jit(fixed.apply)(params, images)
    by_gates = jax.jit(free.apply)(params, images, gates=jnp.asarray(policy, jnp.float32))
    for task in ("segment", "depth"):
        np.testing.assert_allclose(by_policy[task], by_gates[task], rtol=1e-4, atol=1e-5)
    # A block that no task selects has no parameters of its own (block 0 keeps its width: no shortcut).
    unused = AdaShareNet(tasks, widths=(8, 16), policy=((False, True, True), (False, False, True)))
    shapes = jax.eval_shape(unused.init, jax.random.key(0), images)
    assert "SelectOrSkipBlock_0" not in shapes["params"]["backbone"]
    assert parameter_counts(shapes)["shared"] < parameter_counts(params)["shared"]


def test_gumbel_softmax_gates_become_one_hot_as_the_temperature_anneals():
    phase = learning(warmup_steps=0)  # the last block is learned from the first step
    logits = jnp.zeros((2000, 3, 2))  # even odds: only the noise and the temperature decide
    gates = jax.jit(phase.gates)
    first = np.asarray(gates(logits, jnp.asarray(0), jax.random.key(0)))[:, -1]
    last = np.asarray(gates(logits, jnp.asarray(phase.steps - 1), jax.random.key(1)))[:, -1]
    near_discrete = lambda g: np.mean(np.minimum(g, 1 - g) < 0.01)  # noqa: E731
    assert near_discrete(first) < 0.05 and near_discrete(last) > 0.9
    assert 0.45 < last.mean() < 0.55  # still a fair sample of the even odds
    assert float(phase.temperature(jnp.asarray(0))) == pytest.approx(5.0)
    assert float(phase.temperature(jnp.asarray(phase.steps - 1))) == pytest.approx(0.01, rel=1e-3)


def test_curriculum_selects_everything_in_warm_up_then_learns_from_the_last_block_down():
    phase = learning()
    learned = [np.asarray(phase.learned_blocks(jnp.asarray(step))).tolist() for step in (0, 9, 10, 30, 54, 99)]
    assert learned == [[False] * 3, [False] * 3, [False, False, True], [False, True, True], [True] * 3, [True] * 3]
    gates = np.asarray(phase.gates(jnp.full((2, 3, 2), 3.0).at[..., 1].set(-3.0), jnp.asarray(30),
                                   jax.random.key(0)))
    assert (gates[:, 0] == 1.0).all() and (gates[:, 1:] < 1.0).all()  # fixed blocks: selected


def test_sparsity_pushes_towards_skipping_and_sharing_weighs_lower_blocks_more():
    phase = learning(sharing_weight=0.0)
    end = jnp.asarray(99)
    grads = jax.grad(lambda z: phase.regularisers(z, end)["sparsity"])(jnp.zeros((2, 3, 2)))
    assert (grads[..., 0] > 0).all() and (grads[..., 1] < 0).all()  # descending lowers select, raises skip
    phase = learning(sparsity_weight=0.0)
    agree = jnp.zeros((2, 3, 2))
    assert float(phase.regularisers(agree, end)["sharing"]) == 0.0
    disagree_low = agree.at[0, 0, 0].set(2.0)
    disagree_high = agree.at[0, 2, 0].set(2.0)
    assert float(phase.regularisers(disagree_low, end)["sharing"]) > \
        float(phase.regularisers(disagree_high, end)["sharing"]) > 0.0


def test_discrete_policy_is_each_blocks_argmax():
    logits = np.array([[[2.0, 1.0], [0.0, 3.0]], [[-1.0, 0.0], [0.5, 0.5]]])
    assert discrete_policy(logits) == ((True, False), (False, True))


@pytest.fixture(scope="module")
def dataset():
    return synthetic_dataset(120, 16, seed=0).select_tasks(["segment", "depth"])


def test_policy_phase_then_retraining_on_the_fixed_policy_resumes_in_either_phase(dataset, tmp_path):
    labeled = {"segment": np.arange(10), "depth": np.arange(90)}
    config = tiny_config(model="adashare", widths=(8,), adashare_policy_steps=6, adashare_warmup_steps=1,
                         adashare_curriculum_fraction=0.5)
    full_trainer = train.Trainer(dataset, labeled, config, str(tmp_path / "full"))
    full = full_trainer.train(progress=False)
    assert full.steps == 12  # 6 policy steps, then 6 of re-training
    saved = json.loads((tmp_path / "full" / "policy_learning" / "policy.json").read_text())
    policy = discrete_policy(np.array(saved["logits"]))
    assert tuple(full_trainer.policy.values()) == policy == full_trainer.model.policy
    assert full_trainer.definition.policy_learning is None  # re-training: no gates sampled, no policy learned
    fixed_shapes = jax.eval_shape(full_trainer.model.init, jax.random.key(0), dataset.train.images[:1])
    assert jax.tree.structure(fixed_shapes) == jax.tree.structure(full.params)
    phases = [[json.loads(line) for line in (tmp_path / "full" / d / "metrics.jsonl").read_text().splitlines()]
              for d in ("policy_learning", ".")]
    assert all("temperature" in r and "sparsity" in r for r in phases[0])
    assert not any("temperature" in r for r in phases[1])
    assert phases[0][-1]["temperature"] == pytest.approx(config.adashare_final_temperature, rel=1e-3)
    # Pre-empted in the policy phase, then in re-training: the same parameters as without interruption.
    for until in (4, 9, None):
        resumed = train.Trainer(dataset, labeled, config, str(tmp_path / "resumed")).train(progress=False,
                                                                                            until_step=until)
    for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(resumed.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
