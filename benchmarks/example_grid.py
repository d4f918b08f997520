"""Writes docs/synthetic_examples.png: synthetic scenes with every task's target, and each scene as
rendered at 16 x 16 (the training resolution of the default recipe).

    python benchmarks/example_grid.py
"""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from taba_jax.data import synthetic  # noqa: E402


def main(path="docs/synthetic_examples.png", rows=5, size=64):
    images, targets = synthetic.generate(rows, size, seed=0)
    small, _ = synthetic.generate(rows, 16, seed=0)  # the same scenes: only the pixel noise differs
    fig, axes = plt.subplots(rows, 8, figsize=(13.5, 1.8 * rows))
    for i in range(rows):
        axes[i, 0].imshow(images[i])
        axes[i, 7].imshow(small[i])
        axes[i, 1].imshow(targets["segment"][i], vmin=0, vmax=synthetic.NUM_CLASSES, cmap="tab10")
        axes[i, 2].imshow(targets["depth"][i, ..., 0], cmap="viridis_r")
        axes[i, 3].imshow(targets["normal"][i] * 0.5 + 0.5)
        axes[i, 4].imshow(targets["edge"][i, ..., 0], cmap="gray")
        axes[i, 5].barh(range(synthetic.NUM_CLASSES), targets["classify"][i])
        axes[i, 5].set_yticks(range(synthetic.NUM_CLASSES), synthetic.CLASS_NAMES, fontsize=7)
        axes[i, 6].bar([0], targets["texture"][i])
        axes[i, 6].set_ylim(0, 1)
    for j, title in enumerate(("image",) + synthetic.TASK_NAMES + ("image 16 px",)):
        axes[0, j].set_title(title)
    for ax in axes.flat:
        ax.set_xticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=72)


if __name__ == "__main__":
    main()
