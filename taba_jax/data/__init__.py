"""Datasets: the embedded synthetic scenes and the generic `MultiTaskDataset`."""
