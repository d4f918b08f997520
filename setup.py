"""Install taba_jax: `pip install -e ".[test]"`."""
import setuptools

setuptools.setup(
    name="taba_jax",
    version="0.1.0",
    description="Task-adaptive label budget allocation and multi-task training in JAX.",
    packages=setuptools.find_packages(include=["taba_jax", "taba_jax.*"]),
    python_requires=">=3.11",
    install_requires=[
        "jax>=0.6",
        "flax>=0.10",
        "optax>=0.2",
        "orbax-checkpoint>=0.11",
        "numpy>=1.26",
        "absl-py>=2.0",
        "ml-collections>=0.1.1",
        "tqdm>=4.66",
        "matplotlib>=3.8",
        "tensorboardX>=2.6",
        # Real datasets (taba_jax.data.builders) through TFDS without TensorFlow: 4.9.10 is the first
        # release whose builders and NumPy readers work without TF next to protobuf 7 (4.9.9 fails).
        "tensorflow-datasets>=4.9.10",
        "array-record",  # the ArrayRecord file format the builders write
        "importlib_resources",  # imported by TFDS, which declares it only for old Pythons
        "pillow",
        "scipy",  # .mat files of PASCAL-Context / PASCAL-Part
        "grain>=0.2.18",  # streams data-source splits: decoding in worker processes, prefetching
    ],
    extras_require={
        # scikit-learn ships the real images (handwritten digits) of tests/test_learnability.py.
        "test": ["pytest>=8", "pytest-xdist>=3.5", "hypothesis>=6.100", "scikit-learn>=1.3", "ray>=2.40"],
        # Sweeps as Ray tasks on a cluster: --config.executor=ray (taba_jax.executors.RayTasks).
        "ray": ["ray>=2.40"],
        # PyTorch is only a yardstick for benchmarks/train_throughput.py, never a dependency.
        "benchmark": ["torch"],
    },
)
