# python docs/recipes/texture_linear_probe.py  (from the repository root; about 5 s)
"""Can `texture` be read off the 16 x 16 scenes from few labels? A ridge regression on six image
statistics (mean absolute first and second differences of the grey image, along rows, columns and
both diagonals) against the mean predictor, at 50 to 1000 training labels, on 1000 test scenes.

If a linear model on these reaches well below the mean predictor's error from ~100 labels, the
scenes carry the signal and a CNN that stays at the mean predictor there is short of sample
efficiency, not of information.
"""
import numpy as np

from taba_jax.data import synthetic

TRAIN_SIZES = (50, 110, 330, 1000)
TEST = 1000
RIDGE = 1.0  # on standardised features


def ridge_error(train_x, train_y, test_x, test_y, ridge=RIDGE):
    """Test mean absolute error of a ridge regression (unpenalised intercept) on standardised features."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    design = np.column_stack([(train_x - mean) / std, np.ones(len(train_x))])
    penalty = ridge * np.eye(design.shape[1])
    penalty[-1, -1] = 0
    weights = np.linalg.solve(design.T @ design + penalty, design.T @ train_y)
    return np.abs(np.column_stack([(test_x - mean) / std, np.ones(len(test_x))]) @ weights - test_y).mean()


def image_statistics(images):
    grey = images.mean(-1)
    first = [np.abs(np.diff(grey, axis=2)), np.abs(np.diff(grey, axis=1)),
             np.abs(grey[:, 1:, 1:] - grey[:, :-1, :-1]), np.abs(grey[:, 1:, :-1] - grey[:, :-1, 1:])]
    second = [np.abs(grey[:, :, 2:] - 2 * grey[:, :, 1:-1] + grey[:, :, :-2]),
              np.abs(grey[:, 2:] - 2 * grey[:, 1:-1] + grey[:, :-2])]
    return np.column_stack([d.mean(axis=(1, 2)) for d in first + second])


def main():
    images, targets = synthetic.generate(max(TRAIN_SIZES) + TEST, image_size=16, seed=5)
    features, texture = image_statistics(images), targets["texture"][:, 0]
    test_x, test_y = features[-TEST:], texture[-TEST:]
    print("| labels | ridge abs. error | mean predictor abs. error | ratio |")
    print("|---:|---:|---:|---:|")
    for n in TRAIN_SIZES:
        ridge = ridge_error(features[:n], texture[:n], test_x, test_y)
        constant = np.abs(texture[:n].mean() - test_y).mean()
        print(f"| {n} | {ridge:.3f} | {constant:.3f} | {ridge / constant:.2f}× |")


if __name__ == "__main__":
    main()
