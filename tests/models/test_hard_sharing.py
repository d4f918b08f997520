import jax
import numpy as np

from taba_jax.data.synthetic import task_specs
from taba_jax.models import MultiTaskNet, shared_parameters


def test_every_head_has_its_shape_and_lives_under_heads():
    model = MultiTaskNet(tuple(task_specs()), widths=(8, 16))
    images = np.zeros((3, 16, 16, 3), np.float32)
    params = jax.eval_shape(model.init, jax.random.key(0), images)  # shapes only: nothing to compile
    outputs = jax.eval_shape(model.apply, params, images)
    expected = {"segment": (3, 16, 16, 5), "depth": (3, 16, 16, 1), "normal": (3, 16, 16, 3),
                "edge": (3, 16, 16, 1), "classify": (3, 4), "texture": (3, 1)}
    assert {k: v.shape for k, v in outputs.items()} == expected
    assert sorted(params["params"]["heads"]) == sorted(expected)


def test_shared_parameters_are_everything_outside_heads():
    model = MultiTaskNet(tuple(task_specs(["segment", "texture"])), widths=(8,))
    params = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 8, 8, 3), np.float32))
    marks = shared_parameters(params)
    flat = jax.tree_util.tree_flatten_with_path(marks)[0]
    for path, shared in flat:
        in_heads = any(getattr(k, "key", None) == "heads" for k in path)
        assert shared is (not in_heads)
    assert any(shared for _, shared in flat) and any(not shared for _, shared in flat)


def test_head_groups_give_each_head_only_its_group_of_the_batch():
    model = MultiTaskNet(tuple(task_specs(["segment", "depth", "classify"])), widths=(8,))
    images = np.random.default_rng(0).random((6, 8, 8, 3), np.float32)  # 3 groups of 2 images
    params = model.init(jax.random.key(0), images)
    whole = model.apply(params, images)
    grouped = model.apply(params, images, {"segment": 2, "classify": 0, "depth": 1})
    assert sorted(grouped) == ["classify", "depth", "segment"]
    for task, group in {"segment": 2, "classify": 0, "depth": 1}.items():
        np.testing.assert_allclose(grouped[task], whole[task][2 * group:2 * group + 2], rtol=1e-5, atol=1e-6)
    only_depth = model.apply(params, images[:2], {"depth": 0})  # unlisted heads predict nothing
    assert list(only_depth) == ["depth"] and only_depth["depth"].shape == (2, 8, 8, 1)
