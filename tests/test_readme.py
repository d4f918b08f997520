"""The README's commands and code, run in the order written (with tiny sizes), so it cannot drift."""
import os
import re

from in_process import run_launcher

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Appended to each launcher command: small data and models, so the whole README runs in minutes.
TINY = {
    "launch/train.py": ["--config.num_images=100", "--config.image_size=16", "--config.train.num_steps=4",
                        "--config.train.batch_size=4", "--config.train.widths=8", "--config.cache_data=False",
                        "--config.taba.affinity_every=1", "--config.taba.subset_fractions=0.5"],
    "launch/allocate.py": ["--config.num_images=80"],  # the train split of the tiny train job
    "launch/experiment.py": ["--config.num_images=60", "--config.image_size=8", "--config.budgets=400",
                             "--config.seeds=0", "--config.strategies=equal_budget,random_pairs",  # TABA: train.py above
                             "--config.train.num_steps=4", "--config.train.batch_size=4",
                             "--config.train.widths=8", "--config.taba.affinity_every=1",
                             "--config.taba.subset_fractions=0.5", "--noprogress"],
    "launch/summarize.py": [],
}


def readme_blocks():
    """(language, code) of every fenced bash or python block, in order."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    return re.findall(r"```(bash|python)\n(.*?)```", text, flags=re.S)


def bash_commands(code: str) -> list[str]:
    return [line.strip() for line in code.replace("\\\n", " ").splitlines() if line.strip()]


def test_readme_commands_and_code_run_in_order(tmp_path):
    blocks = readme_blocks()
    assert sum(language == "python" for language, _ in blocks) >= 3
    launched = set()
    for language, code in blocks:
        code = code.replace("/tmp/taba", str(tmp_path))
        if language == "python":  # in this process, like the launchers
            exec(compile(code, "README.md python block", "exec"), {"__name__": "__readme__"})
            continue
        for command in bash_commands(code):
            if command.startswith(("pip install", "pytest")):
                continue  # the install and test commands are what CI runs around this test
            args = command.split()
            assert args[0] == "python" and args[1] in TINY, f"README command this test does not know: {command}"
            launched.add(args[1])
            result = run_launcher(*args[1:], *TINY[args[1]])  # as `python ...` would, in this process
            assert result.returncode == 0, f"README command failed: {command}\n{result.stderr[-3000:]}"
    assert launched == set(TINY)
    assert (tmp_path / "taba" / "results.json").exists() and (tmp_path / "summary.md").exists()
