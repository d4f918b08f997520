"""Datasets: the embedded synthetic scenes, the generic `MultiTaskDataset`, and real datasets built
through TFDS without TensorFlow (`tfds_datasets.build`, `reader.SplitReader`; see docs/datasets.md)."""
