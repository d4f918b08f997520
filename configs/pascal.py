# python launch/train.py --config=configs/pascal.py --workdir=/tmp/taba_pascal --config.manual_dir=$HOME/data/pascal
"""Train a multi-task model on PASCAL VOC 2012 with the labels a budget buys: a segmentation mask
against the image-level class labels (multi-label), priced 10 : 1.

Prepare the data first (README "Real datasets"): `VOCdevkit/VOC2012` in `--config.manual_dir`; the
TFDS dataset is built on first use into `--config.data_dir` (default `<workdir>/tfds`). The pool is
VOC's segmentation train list (1 464 images); VOC has no public test labels, so the val list is the
test split and TABA's validation images are carved from train. Small enough to be held in memory.
The PASCAL-MT tasks of PASCAL-Context: `--config.pascal_source=context
--config.tasks=segmentation,human_parts,saliency,normals,edges --config.costs=10,10,3,3,3`.
"""
from taba_jax import config as cfg


def get_config():
    config = cfg.to_config_dict(cfg.TrainJobConfig(
        tasks=("segmentation", "classes"),
        costs=(10.0, 1.0),  # a mask (about 240 s) against image-level labels (an order of magnitude cheaper)
        image_size=64,
        pascal_source="segmentation",
        in_memory=True,
        budget=5000.0,
        strategy="equal_budget",  # or taba, single_task:<task>, equal_count_shared, ...
        train=cfg.TrainConfig(num_steps=5000, batch_size=16, checkpoint_every=500, log_every=100),
    ))
    config.dataset = "pascal_multitask"  # set last: a TFDS dataset needs --config.manual_dir, which has no default
    return config
