"""Report and plots of an experiment's records (one setting): report.md and three PNGs.

Delta_m (METHOD section 6) here is against the full-supervision model of the same seed, one primary
metric per task, in percent; 0 = as good as labelling everything, higher is better.
"""
from __future__ import annotations

import dataclasses
import io
import os
from typing import Sequence
from collections import defaultdict

import numpy as np

from taba_jax import io_utils, transfer
from taba_jax.budget.strategies import parse_shares
from taba_jax.records import ExperimentRecord

PLOTS = ("delta_m_vs_budget.png", "labels_per_task.png", "affinity.png", "oracle_simplex.png")
OFF_SCALE = 25.0  # Delta_m points below the best beyond which a strategy is left off the line plot


def summarize(records: list[ExperimentRecord]) -> dict[tuple[str, float], tuple[float, float, int]]:
    """(strategy, budget) -> (mean Delta_m, sample std over seeds, number of seeds).

    The std is the sample one (ddof 1, as the paired intervals use; 0 for a single seed)."""
    groups = defaultdict(list)
    for r in records:
        groups[r.strategy, float(r.budget)].append(r.delta_m)
    return {k: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v))
            for k, v in groups.items()}


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    """Delta_m(TABA, s) - Delta_m(other, s) over the seeds s both were run with."""

    mean: float
    low: float  # 95 % t-interval over seeds
    high: float
    seeds: int
    seeds_to_resolve: int | None  # seeds a 95 % interval of this spread needs to exclude 0 (None: mean 0)

    @property
    def real(self) -> bool:
        """The interval excludes 0."""
        return self.low > 0 or self.high < 0


def paired_difference(records: list[ExperimentRecord], strategy: str, other: str, budget: float) -> PairedDifference | None:
    """The paired difference of Delta_m between `strategy` and `other` at `budget`; every strategy of
    a (budget, seed) shares the model initialisation and data streams, so the seed's noise cancels.
    None with fewer than 2 shared seeds."""
    by_seed = defaultdict(dict)
    for r in records:
        if float(r.budget) == budget and r.strategy in (strategy, other):
            by_seed[r.seed][r.strategy] = r.delta_m
    differences = np.array([d[strategy] - d[other] for d in by_seed.values() if len(d) == 2])
    if len(differences) < 2:
        return None
    mean, low, high = mean_interval(differences)
    sd = float(differences.std(ddof=1))
    needed = None if mean == 0 else max(2, int(np.ceil((1.96 * sd / abs(mean)) ** 2)))
    return PairedDifference(mean, low, high, len(differences), needed)


# Beyond this many seeds the count only says "the mean is about 0"; the verdict says that instead.
MAX_SEEDS_SHOWN = 1000


def _verdict(variant: str, diff: PairedDifference) -> str:
    """The paired table's verdict: real (and which way), or how many seeds would resolve it."""
    if diff.real:
        return f"**real**: {variant} " + ("better" if diff.mean > 0 else "worse")
    if diff.seeds_to_resolve is None:
        return "no difference"
    if diff.seeds_to_resolve > MAX_SEEDS_SHOWN:
        return f"not resolved (> {MAX_SEEDS_SHOWN} seeds needed)"
    return f"not resolved (≈ {diff.seeds_to_resolve} seeds needed)"


def mean_interval(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean of `values` (at least 2) and its t-interval at `confidence`: (mean, low, high)."""
    from scipy import stats
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    values = np.asarray(values, np.float64)
    mean, n = float(values.mean()), len(values)
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * float(values.std(ddof=1)) / np.sqrt(n)
    return mean, mean - half, mean + half


def is_oracle_grid(strategy: str) -> bool:
    """A fixed-share allocation of the oracle's grid (not a heuristic one would use blind)."""
    return strategy.startswith("shares:")


def is_heuristic(strategy: str) -> bool:
    """Not TABA (nor a TABA variant a combined report labels `taba[...]`) and not the oracle's grid."""
    return not strategy.startswith("taba") and not is_oracle_grid(strategy)


def _best(summary, budget: float, include) -> tuple[str, float] | None:
    """(strategy, mean Delta_m) of the best strategy at `budget` among those `include` accepts."""
    candidates = [(mean, s) for (s, b), (mean, _, _) in summary.items() if b == budget and include(s)]
    if not candidates:
        return None
    mean, strategy = max(candidates)
    return strategy, mean


def best_heuristic(summary, budget: float) -> tuple[str, float] | None:
    """The heuristic with the highest mean Delta_m at `budget` (best in hindsight); None if none ran."""
    return _best(summary, budget, is_heuristic)


def oracle(summary, budget: float) -> tuple[str, float] | None:
    """The fixed-share allocation with the best mean Delta_m at `budget` (None if the grid did not run)."""
    return _best(summary, budget, is_oracle_grid)


def _seeds_by_strategy(records: list[ExperimentRecord], budget: float) -> dict[str, set[int]]:
    """strategy -> the seeds it ran with at `budget`."""
    seeds = defaultdict(set)
    for r in records:
        if float(r.budget) == budget:
            seeds[r.strategy].add(r.seed)
    return seeds


def _grid_runs(records: list[ExperimentRecord], budget: float) -> dict[str, set[int]]:
    """Each point of the oracle's grid at `budget` -> the seeds it ran with."""
    return {s: seeds for s, seeds in _seeds_by_strategy(records, budget).items() if is_oracle_grid(s)}


def grid_seeds(records: list[ExperimentRecord], budget: float) -> set[int]:
    """The seeds every point of the oracle's grid at `budget` ran with (none if the grid did not run)."""
    grid = _grid_runs(records, budget)
    return set.intersection(*grid.values()) if grid else set()


def best_grid_point(records: list[ExperimentRecord], budget: float, seeds, grid=None) -> tuple[str, float] | None:
    """The oracle's pick at `budget`: (grid point, mean Delta_m) with the best mean over `seeds`,
    among the grid points `grid` (None: every one in `records`)."""
    return oracle(summarize([r for r in records if float(r.budget) == budget and r.seed in seeds
                             and (grid is None or r.strategy in grid)]), budget)


def oracle_fraction(strategy_mean: float, baseline_mean: float, oracle_mean: float) -> float | None:
    """(Delta_m(s) - Delta_m(equal_budget)) / (Delta_m(oracle) - Delta_m(equal_budget)); None if the
    oracle gains nothing over equal_budget."""
    gain = oracle_mean - baseline_mean
    return None if gain <= 0 else (strategy_mean - baseline_mean) / gain


def budget_to_match(budgets, taba_means, target: float) -> float | None:
    """Smallest budget at which TABA's mean Delta_m, linearly interpolated between the measured
    budgets, reaches `target`; None beyond the largest budget, the smallest if already reached there."""
    budgets, means = np.asarray(budgets, float), np.asarray(taba_means, float)
    if means[0] >= target:
        return float(budgets[0])
    for (b0, m0), (b1, m1) in zip(zip(budgets, means), zip(budgets[1:], means[1:])):
        if m0 < target <= m1:
            return float(b0 + (target - m0) / (m1 - m0) * (b1 - b0))
    return None


def markdown(records: list[ExperimentRecord], title: str, tasks: list[str], references: Sequence[dict] = ()) -> str:
    summary = summarize(records)
    strategies = [s for s in dict.fromkeys(r.strategy for r in records) if not is_oracle_grid(s)]
    budgets = sorted({float(r.budget) for r in records})
    best = {b: max(summary[s, b][0] for s in strategies if (s, b) in summary) for b in budgets}
    lines = [f"# {title}", "",
             "Δm (%) against full supervision of the same seed (one primary metric per task), mean ± std "
             "over seeds; higher is better, 0 = as good as labelling everything. **Bold**: best at that budget.",
             "", "| strategy | " + " | ".join(f"budget {b:g}" for b in budgets) + " |",
             "|---|" + "---:|" * len(budgets)]
    for s in strategies:
        cells = []
        for b in budgets:
            if (s, b) not in summary:
                cells.append("–")
                continue
            mean, std, n = summary[s, b]
            cell = f"{mean:+.2f} ± {std:.2f} (n={n})"
            cells.append(f"**{cell}**" if mean == best[b] else cell)
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines += ["", "The best heuristic against TABA over the seeds TABA ran at each budget (the table above may "
              "hold more seeds for some strategies).", "",
              "| budget | best heuristic | its Δm | TABA Δm | TABA − best heuristic | budget TABA needs to match |",
              "|---:|---|---:|---:|---:|---:|"]
    has_taba = all(("taba", b) in summary for b in budgets)
    taba_seeds = {b: _seeds_by_strategy(records, b)["taba"] for b in budgets}
    on_taba_seeds = summarize([r for r in records if r.seed in taba_seeds[float(r.budget)]]) if has_taba else summary
    for b in budgets:
        best_one = best_heuristic(on_taba_seeds, b)
        if best_one is None:
            lines.append(f"| {b:g} | – (no heuristic ran) | – | – | – | – |")
            continue
        name, mean = best_one
        if not has_taba:
            lines.append(f"| {b:g} | {name} | {mean:+.2f} | – | – | – |")
            continue
        taba_mean = summary["taba", b][0]
        need = budget_to_match(budgets, [summary["taba", x][0] for x in budgets], mean)
        if need is None:
            need_text = f"> {budgets[-1]:g} (not reached)"
        elif need == budgets[0] and summary["taba", budgets[0]][0] >= mean:
            need_text = f"≤ {need:g} (≤ {need / b:.2f}×)"  # reached at the smallest budget measured
        else:
            need_text = f"{need:,.0f} ({need / b:.2f}×)"
        lines.append(f"| {b:g} | {name} | {mean:+.2f} | {taba_mean:+.2f} | {taba_mean - mean:+.2f} | {need_text} |")
    taba_like = [s for s in strategies if s.startswith("taba")]
    if taba_like:
        lines += ["", "Paired differences Δm(TABA) − Δm(other) over the seeds both ran (same initialisation "
                  "and data streams, and the same pilot for every TABA variant), mean and 95 % t-interval; "
                  "**real** when the interval excludes 0, else the number of seeds a 95 % interval of this "
                  "spread would need to exclude 0.", "",
                  "| budget | TABA | other | TABA − other | 95 % interval | seeds | verdict |",
                  "|---:|---|---|---:|---|---:|---|"]
        for b in budgets:
            for variant in taba_like:
                others = [s for s in strategies if s not in taba_like] + (["taba"] if variant != "taba" else [])
                for other in others:
                    diff = paired_difference(records, variant, other, b)
                    if diff is None:
                        continue
                    lines.append(f"| {b:g} | {variant} | {other} | {diff.mean:+.2f} | [{diff.low:+.2f}, "
                                 f"{diff.high:+.2f}] | {diff.seeds} | {_verdict(variant, diff)} |")
    lines += _oracle_lines(records, strategies, budgets)
    taba_runs = _taba_runs(records)
    if taba_runs:
        affinity = np.mean([r.taba["affinity"] for r in taba_runs], axis=0)
        gamma = np.mean([r.taba["gamma"] for r in taba_runs], axis=0)
        lines += ["", f"TABA's estimate, mean over its {len(taba_runs)} runs: affinity S[s, t] (row s helps column t) "
                  "and learning-curve slope γ.", "",
                  "| s \\ t | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks)]
        lines += [f"| {t} | " + " | ".join(f"{v:.2f}" for v in row) + " |" for t, row in zip(tasks, affinity)]
        lines += ["| γ | " + " | ".join(f"{g:.2f}" for g in gamma) + " |"]
    lines += _transfer_lines(records, budgets)
    labels = _mean_labels(records, tasks)
    lines += ["", "Labels bought per task (mean over seeds):", "",
              "| strategy | budget | " + " | ".join(labels["tasks"]) + " |", "|---|---:|" + "---:|" * len(labels["tasks"])]
    first_seen = {s: i for i, s in enumerate(dict.fromkeys(r.strategy for r in records))}
    for (s, b), counts in sorted(labels["counts"].items(), key=lambda item: (first_seen[item[0][0]], item[0][1])):
        lines.append(f"| {s} | {b:g} | " + " | ".join(f"{c:.0f}" for c in counts) + " |")
    if references:
        lines += ["", f"Full-supervision reference (every label of the pool), primary metric per task, mean over its "
                  f"{len(references)} seeds: " + ", ".join(
                      f"{t} {references[0]['metrics'][t]['primary_metric']} "
                      f"{np.mean([ref['metrics'][t]['primary'] for ref in references]):.3f}" for t in tasks) + "."]
    wall = sum(r.wall_seconds for r in records)
    lines += ["", f"{len(records)} runs, {wall / 60:.1f} min of run time (references excluded).", "",
              *(f"![{p}]({p})" for p in _plot_names(records, tasks)), ""]
    return "\n".join(lines)


def _transfer_lines(records: list[ExperimentRecord], budgets) -> list[str]:
    """Per budget where the runs identify it, the transfer measured on them (taba_jax.transfer)
    beside the affinity TABA's pilots estimated at that budget."""
    lines = []
    for b in budgets:
        measured = transfer.measure_transfer(records, b)
        if measured is None:
            continue
        pilots = [r.taba["affinity"] for r in _taba_runs(records) if float(r.budget) == b]
        affinity = np.mean(pilots, axis=0) if pilots else None
        implied = measured.implied_affinity()
        lines += ["", f"Transfer measured on the runs at budget {b:g} ({measured.runs} runs, {measured.seeds} seeds; "
                  "taba_jax.transfer): elasticity of each column task's error in each row task's labels, with its "
                  "95 % interval (negative: the row's labels help), and in brackets the implied affinity"
                  + (" and TABA's S (mean of its pilots)" if affinity is not None else "")
                  + "; partial effects within the allocations these runs happen to span.", "",
                  "| labels of \\ error of | " + " | ".join(measured.tasks) + " |",
                  "|---|" + "---:|" * len(measured.tasks)]
        for s, source in enumerate(measured.tasks):
            cells = []
            for t in range(len(measured.tasks)):
                cell = f"{measured.elasticity[s, t]:+.3f} ± {measured.half_width[s, t]:.3f}"
                if s != t and np.isfinite(implied[s, t]):
                    cell += f" ({implied[s, t]:+.2f}" + (f"; S {affinity[s, t]:.2f}" if affinity is not None else "") + ")"
                cells.append(cell)
            lines.append(f"| {source} | " + " | ".join(cells) + " |")
    return lines


def _oracle_lines(records: list[ExperimentRecord], strategies, budgets) -> list[str]:
    """The oracle (best fixed-share allocation in hindsight) per budget where its grid ran, and each
    strategy's fraction of the oracle's gain over equal_budget — all over the seeds every grid point
    ran, so that a grid run on fewer seeds than the sweep is compared with the same seeds' runs. Where
    the best point also ran on other seeds (`oracle_holdout`), the same over those held-out seeds."""
    lines = []
    for b in budgets:
        seeds = grid_seeds(records, b)
        best = best_grid_point(records, b, seeds)
        if best is None:
            continue
        name, _ = best
        points = len(_grid_runs(records, b))
        held_out = _seeds_by_strategy(records, b)[name] - seeds
        for over, caption in [(seeds, f"Oracle at budget {b:g}, over seeds {_seed_list(seeds)}: the best of {points} "
                                      f"fixed-share allocations is `{name}`"),
                              (held_out, f"Held out at budget {b:g}: `{name}`, picked on seeds {_seed_list(seeds)}, "
                                         f"run on seeds {_seed_list(held_out)}")]:
            lines += _fraction_table([r for r in records if float(r.budget) == b and r.seed in over],
                                     strategies, name, b, caption)
    return lines


def _seed_list(seeds) -> str:
    return ", ".join(map(str, sorted(seeds)))


def _fraction_table(records: list[ExperimentRecord], strategies, oracle_name: str, budget: float,
                    caption: str) -> list[str]:
    """Each strategy's fraction of `oracle_name`'s gain over equal_budget, means over `records`' seeds
    (only strategies run on all of them); nothing without equal_budget or the oracle there."""
    seeds, ran = {r.seed for r in records}, _seeds_by_strategy(records, budget)
    if not seeds or ran["equal_budget"] != seeds or ran[oracle_name] != seeds:
        return []
    summary = summarize(records)
    mean, baseline = summary[oracle_name, budget][0], summary["equal_budget", budget][0]
    gain = paired_difference(records, oracle_name, "equal_budget", budget)
    interval = f", paired difference [{gain.low:+.2f}, {gain.high:+.2f}]" if gain is not None else ""
    lines = ["", f"{caption} (Δm {mean:+.2f}; equal_budget {baseline:+.2f}{interval}). Fraction of the oracle's "
             "gain over equal_budget, and its Δm above the oracle's (means over the same seeds):",
             "", "| strategy | Δm | fraction of the oracle's gain | Δm − oracle's |", "|---|---:|---:|---:|"]
    for s in strategies:
        if ran[s] == seeds:
            fraction = oracle_fraction(summary[s, budget][0], baseline, mean)
            cell = "– (oracle gains nothing)" if fraction is None else f"{fraction:.0%}"
            lines.append(f"| {s} | {summary[s, budget][0]:+.2f} | {cell} | {summary[s, budget][0] - mean:+.2f} |")
    return lines


def settings_markdown(records_by_setting: dict[str, list[ExperimentRecord]]) -> str:
    """One table over settings: the best heuristic at each budget, its Delta_m and TABA's, so that
    one can see whether the best heuristic differs between settings and where TABA stands."""
    lines = ["| setting | budget | best heuristic | its Δm (mean ± std) | runner-up heuristic | TABA Δm | TABA rank |",
             "|---|---:|---|---:|---|---:|---:|"]
    for setting, records in records_by_setting.items():
        summary = summarize(records)
        for b in sorted({float(r.budget) for r in records}):
            ranked = sorted(((m, s) for (s, x), (m, _, _) in summary.items() if x == b and not is_oracle_grid(s)),
                            reverse=True)
            heuristics = [(m, s) for m, s in ranked if is_heuristic(s)]
            (_, best), runner_up = heuristics[0], heuristics[1][1] if len(heuristics) > 1 else "–"
            taba_rank = [s for _, s in ranked].index("taba") + 1 if ("taba", b) in summary else None
            cell = lambda s: f"{summary[s, b][0]:+.2f} ± {summary[s, b][1]:.2f}"  # noqa: E731
            lines.append(f"| {setting} | {b:g} | {best} | {cell(best)} | {runner_up} | "
                         f"{cell('taba') if taba_rank else '–'} | "
                         f"{f'{taba_rank} of {len(ranked)}' if taba_rank else '–'} |")
    return "\n".join(lines) + "\n"


def _taba_runs(records: list[ExperimentRecord]) -> list[ExperimentRecord]:
    """The runs of plain `taba` with their estimate (variants labelled `taba[...]` are left out)."""
    return [r for r in records if r.strategy == "taba" and r.taba is not None]


def _plot_names(records, tasks) -> list[str]:
    """The plots `write` makes for these records: the affinity map only with TABA runs, the oracle's
    simplex map only for three tasks with a share grid."""
    names = list(PLOTS[:2])
    if _taba_runs(records):
        names.append(PLOTS[2])
    if simplex_points(records, tasks):
        names.append(PLOTS[3])
    return names


def simplex_points(records: list[ExperimentRecord], tasks: list[str]) -> dict[tuple[float, str], list]:
    """For three tasks: per (budget, image mode) of the oracle's grid, each share point's money
    fractions (3,) with its mean Delta_m over seeds; {} for other task counts or without a grid."""
    if len(tasks) != 3:
        return {}
    summary = summarize(records)
    points = defaultdict(list)
    for (strategy, budget), (mean, _, _) in summary.items():
        if is_oracle_grid(strategy):
            fractions, shared = parse_shares(strategy, len(tasks))
            points[budget, "shared" if shared else "disjoint"].append((fractions, mean))
    return dict(sorted(points.items()))


def _ternary(fractions) -> tuple[float, float]:
    """Money fractions (3,) -> 2-D point in an equilateral triangle with task 0 at the bottom left,
    task 1 at the bottom right and task 2 at the top."""
    return fractions[1] + 0.5 * fractions[2], np.sqrt(3) / 2 * fractions[2]


def _mean_labels(records, tasks):
    groups = defaultdict(list)
    for r in records:
        groups[r.strategy, float(r.budget)].append([r.labels[t] for t in tasks])
    return {"tasks": tasks, "counts": {k: np.mean(v, axis=0) for k, v in groups.items()}}


def write(records: list[ExperimentRecord], workdir: str, title: str, tasks: list[str],
          references: Sequence[dict] = ()) -> None:
    """Writes `<workdir>/report.md` and the plots, atomically. `tasks` in the order of the setting
    (the order of TABA's affinity matrix)."""
    if not records:
        return
    with io_utils.atomic_open(os.path.join(workdir, "report.md"), "w") as f:
        f.write(markdown(records, title, tasks, references))
    _plots(records, workdir, tasks, title)


def _plots(records, workdir, tasks, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarize(records)
    strategies = [s for s in dict.fromkeys(r.strategy for r in records) if not is_oracle_grid(s)]
    budgets = sorted({float(r.budget) for r in records})

    # Strategies far below the best (single-task ones leave other heads untrained) would flatten
    # the interesting part of the plot; they are named under it instead.
    best = {b: max(m for (s, x), (m, _, _) in summary.items() if x == b and not is_oracle_grid(s)) for b in budgets}
    shown = [s for s in strategies if s == "taba" or all(summary[s, b][0] > best[b] - OFF_SCALE
                                                         for b in budgets if (s, b) in summary)]
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for i, s in enumerate(shown):
        points = [(b, *summary[s, b][:2]) for b in budgets if (s, b) in summary]
        b, mean, std = map(np.array, zip(*points))
        shift = 1.025 ** (i - (len(shown) - 1) / 2)  # side by side: error bars do not overlap
        ax.errorbar(b * shift, mean, yerr=std, marker="o", capsize=3, label=s, lw=2.5 if s == "taba" else 1.2)
    ax.set_xscale("log")
    ax.set_xticks(budgets, [f"{b:g}" for b in budgets])
    ax.minorticks_off()
    ax.set_xlabel("budget")
    ax.set_ylabel("Δm vs full supervision (%), mean ± std over seeds")
    hidden = [s for s in strategies if s not in shown]
    ax.set_title(title.replace("`", "") + (f"\noff scale (> {OFF_SCALE:g} points below the best): " + ", ".join(hidden)
                                          if hidden else ""), fontsize=8)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(alpha=0.3)
    _save(fig, os.path.join(workdir, PLOTS[0]))

    labels = _mean_labels(records, tasks)
    fig, axes = plt.subplots(1, len(budgets), figsize=(4 + 3 * len(budgets), 4.5), squeeze=False)
    for ax, b in zip(axes[0], budgets):
        bottom = np.zeros(len(strategies))
        for t, task in enumerate(labels["tasks"]):
            values = np.array([labels["counts"].get((s, b), np.zeros(len(labels["tasks"])))[t] for s in strategies])
            ax.bar(range(len(strategies)), values, bottom=bottom, label=task)
            bottom += values
        ax.set_xticks(range(len(strategies)), strategies, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"budget {b:g}")
        ax.set_ylabel("labels bought")
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the bars, not on them
    _save(fig, os.path.join(workdir, PLOTS[1]))

    taba_runs = _taba_runs(records)
    if taba_runs:
        affinity = np.mean([r.taba["affinity"] for r in taba_runs], axis=0)
        fig, ax = plt.subplots(figsize=(1.2 * len(tasks) + 2, 1.2 * len(tasks) + 1))
        image = ax.imshow(affinity, vmin=0, vmax=1, cmap="viridis")
        for (i, j), v in np.ndenumerate(affinity):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="w" if v < 0.6 else "k")
        ax.set_xticks(range(len(tasks)), tasks)
        ax.set_yticks(range(len(tasks)), tasks)
        ax.set_xlabel("target task t")
        ax.set_ylabel("source task s")
        ax.set_title(f"estimated affinity S (mean of {len(taba_runs)} runs)")
        fig.colorbar(image)
        _save(fig, os.path.join(workdir, PLOTS[2]))

    grids = simplex_points(records, tasks)
    if grids:
        _simplex_plot(plt, grids, records, tasks, os.path.join(workdir, PLOTS[3]))


def _simplex_plot(plt, grids, records, tasks, path):
    """The oracle's Delta_m over the simplex of money shares, one panel per budget and image mode,
    with where TABA and equal_budget actually spent the money."""
    values = [m for points in grids.values() for _, m in points]
    # Points that leave a task untrained sit hundreds of points below the rest: clip the colour scale
    # so that differences near the best stay visible (every point is labelled with its value).
    high = max(values)
    low = max(min(values), high - 2 * OFF_SCALE)
    fig, axes = plt.subplots(1, len(grids), figsize=(4.2 * len(grids) + 1, 4), squeeze=False, layout="constrained")
    for ax, ((budget, mode), points) in zip(axes[0], grids.items()):
        xy = np.array([_ternary(f) for f, _ in points])
        scatter = ax.scatter(xy[:, 0], xy[:, 1], c=[m for _, m in points], cmap="viridis", s=260,
                             vmin=low, vmax=high)
        for (x, y), (_, m) in zip(xy, points):
            light = (m - low) / max(high - low, 1e-9) > 0.6
            ax.text(x, y, f"{m:.0f}", ha="center", va="center", fontsize=7, color="k" if light else "w")
        ax.plot([0, 1, 0.5, 0], [0, 0, np.sqrt(3) / 2, 0], color="grey", lw=0.8)
        for name, marker in (("taba", "*"), ("equal_budget", "x")):
            spent = [np.array([r.money[t] for t in tasks]) for r in records
                     if r.strategy == name and float(r.budget) == budget]
            if spent:
                x, y = _ternary(np.mean([m / m.sum() for m in spent], axis=0))
                ax.plot(x, y, marker, color="red", ms=12, label=f"{name} (mean spend)")
        for corner, (x, y) in zip(tasks, [(0, 0), (1, 0), (0.5, np.sqrt(3) / 2)]):
            ax.annotate(corner, (x, y), textcoords="offset points", xytext=(0, -16 if y == 0 else 12),
                        ha="center", fontsize=8)
        ax.set_title(f"budget {budget:g}, {mode} images", fontsize=9)
        ax.set_axis_off()
        ax.set_aspect("equal")
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.colorbar(scatter, ax=list(axes[0]), label="Δm (%), mean over seeds", extend="min" if low > min(values) else "neither")
    fig.suptitle("oracle grid: Δm by share of the budget spent on each task", fontsize=9)
    _save(fig, path)


def _save(fig, path):
    import matplotlib.pyplot as plt
    buffer = io.BytesIO()
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    with io_utils.atomic_open(path, "wb") as f:
        f.write(buffer.getvalue())
