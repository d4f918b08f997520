import dataclasses

from taba_jax import config as cfg, train_job


def test_auto_groups_are_chosen_from_the_given_affinity():
    affinity = ((1.0, 0.9, 0.0, 0.0), (0.8, 1.0, 0.0, 0.0), (0.0, 0.0, 1.0, 0.7), (0.0, 0.0, 0.6, 1.0))
    job = cfg.TrainJobConfig(taba=cfg.TabaConfig(affinity=affinity), train=cfg.TrainConfig(groups=("auto:2",)))
    chosen = train_job.choose_groups(job)
    assert chosen.train.groups == ("segment+depth", "normal+edge")
    assert dataclasses.replace(chosen, train=job.train) == job  # nothing else changes
    one = train_job.choose_groups(dataclasses.replace(job, train=cfg.TrainConfig(groups=("auto:1",))))
    assert one.train.groups == ("segment+depth+normal+edge",)
    named = dataclasses.replace(job, train=cfg.TrainConfig(groups=("segment+normal", "depth+edge")))
    assert train_job.choose_groups(named) is named
