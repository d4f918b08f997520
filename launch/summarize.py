"""One table across experiment workdirs: the best heuristic per setting and budget, and TABA's rank.

    python launch/summarize.py --workdirs=/tmp/taba_geometry,/tmp/taba_tag,/tmp/taba_weak --out=/tmp/summary.md
"""
import os

from absl import flags

from taba_jax import cli, experiment, io_utils, report
from taba_jax.errors import ConfigError

_WORKDIRS = flags.DEFINE_list("workdirs", None, "Experiment workdirs (each with results.jsonl).")
_OUT = flags.DEFINE_string("out", None, "Where to write the markdown table (printed as well).")
flags.mark_flags_as_required(["workdirs"])


def main(argv):
    del argv
    by_workdir = {}
    for workdir in _WORKDIRS.value:
        by_workdir[workdir] = experiment.read_records(workdir)
        if not by_workdir[workdir]:
            raise ConfigError("--workdirs", f"{os.path.join(workdir, experiment.RESULTS_FILE)} has no results")
    settings = [records[0].setting for records in by_workdir.values()]
    # A setting run in two workdirs (e.g. other budgets) is told apart by its folder name.
    text = report.settings_markdown({
        setting if settings.count(setting) == 1 else f"{setting} ({os.path.basename(os.path.normpath(w))})": records
        for setting, (w, records) in zip(settings, by_workdir.items())})
    if _OUT.value:
        with io_utils.atomic_open(_OUT.value, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    cli.run(main)
