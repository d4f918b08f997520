"""Multi-task learning methods as pure functions: loss weighting and gradient combination
(`weighting`) and task grouping under an inference budget (`grouping`)."""
