"""Trains and evaluates a multi-task model on the labels of an allocation.

    python launch/train.py --config=configs/synthetic.py --workdir=/tmp/taba_synthetic \
        [--config.allocation=/tmp/allocation.npz] [--config.reference=DIR/results.json]

On several hosts (or processes) add --jax_coordinator_address=HOST:PORT --jax_num_processes=N
--jax_process_id=I on each, or --multiprocess under SLURM (see taba_jax/distributed.py).
"""
from taba_jax import cli, config as cfg, distributed, train_job

_CONFIG, _WORKDIR, _DISTRIBUTED = cli.define_job_flags(
    "Training config file.", "Checkpoints, metrics.jsonl, TensorBoard, results.json.")


def main(argv):
    del argv
    config = cfg.parse(cfg.TrainJobConfig, _CONFIG.value)
    distributed.initialize_from_flags(_DISTRIBUTED)  # before anything touches a device
    results = train_job.run(config, _WORKDIR.value)
    if not distributed.is_lead():
        return
    print(train_job.metrics_table(results["metrics"]))
    counts = results["num_parameters"]
    print(f"parameters: {counts['total']:,} ({counts['shared']:,} shared, {counts['task_specific']:,} task-specific)")
    if "delta_m" in results:
        print(f"Delta_m = {results['delta_m']:+.2f} %")
    print(f"wrote {_WORKDIR.value}/results.json")


if __name__ == "__main__":
    cli.run(main)
