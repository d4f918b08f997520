import numpy as np
import pytest

from taba_jax.config import TrainConfig
from taba_jax.data.synthetic import task_specs
from taba_jax.models import AdaShareNet, MTAN, MultiTaskNet, build_model, parameter_counts


def test_parameter_counts_split_at_the_heads_subtree():
    params = {"params": {"Conv_0": {"kernel": np.zeros((3, 3, 3, 8)), "bias": np.zeros(8)},
                         "heads": {"depth": {"Dense_0": {"kernel": np.zeros((8, 1))}}}}}
    assert parameter_counts(params) == {"total": 216 + 8 + 8, "shared": 224, "task_specific": 8}


@pytest.mark.parametrize("model, cls", [("hard_sharing", MultiTaskNet), ("mtan", MTAN), ("adashare", AdaShareNet)])
def test_build_model_follows_config_model(model, cls):
    built = build_model(task_specs(["segment", "depth"]), TrainConfig(model=model, widths=(8, 16), blocks=2))
    assert type(built) is cls and built.widths == (8, 16) and built.blocks == 2
    assert [t.name for t in built.tasks] == ["segment", "depth"]
