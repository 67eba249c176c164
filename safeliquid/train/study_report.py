"""The results page of a study (:mod:`safeliquid.train.study`): tables and matplotlib plots from ``study.json``,
each claim stated only where the 95% intervals separate.

Statistics: a grid point's episodes are pooled over its training seeds, and the seeds are the clusters of a
cluster sample: a success or failure rate gets the Wilson interval, a mean the Student-t interval, of the pooled
episodes counted at their effective number, ``n / deff`` with Kish's design effect ``deff = 1 + (m - 1) ICC``
(``m`` episodes per seed, ``ICC`` the intra-seed correlation by one-way ANOVA). Seeds that agree leave the
pooled interval as it is; seeds that differ widen it, up to one effective episode per seed. A mean of a bounded
quantity has its interval cut to the quantity's range.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import t as t_dist

from safeliquid.checkpoint import atomic_write_text
from safeliquid.metrics import proportion_ci
from safeliquid.train.study import WITHHELD

NOMINAL = "noise 0"
FIXED = "fixed gains, same network"
Interval = tuple[float, float, float]  # (mean, low, high)
UNIT = (0.0, 1.0)  # the range of a decision concentration
R2 = (-math.inf, 1.0)  # the range of a held-out R^2


def design_effect(values: np.ndarray, seeds: np.ndarray) -> float:
    """Kish's design effect ``1 + (m0 - 1) ICC`` of per-episode ``values`` (shape ``(n,)``) clustered by their
    training ``seeds`` (shape ``(n,)``): how many times the variance of the pooled mean exceeds that of ``n``
    independent episodes. ICC by one-way ANOVA, clipped to [0, 1]; ``m0`` the mean cluster size (adjusted for
    unequal sizes). 1 with one seed or one episode per seed."""
    labels = np.unique(seeds)
    k, n = len(labels), len(values)
    if k < 2 or n <= k:
        return 1.0
    groups = [values[seeds == s] for s in labels]
    grand = values.mean()
    msb = sum(len(g) * (g.mean() - grand) ** 2 for g in groups) / (k - 1)
    msw = sum(float(((g - g.mean()) ** 2).sum()) for g in groups) / (n - k)
    m0 = (n - sum(len(g) ** 2 for g in groups) / n) / (k - 1)
    denom = msb + (m0 - 1) * msw
    icc = min(max((msb - msw) / denom, 0.0), 1.0) if denom > 0 else 0.0
    return float(1.0 + (m0 - 1) * icc)


def rate(flags: list[bool], seeds: list[int] | None = None) -> Interval:
    """The proportion of ``flags`` with its Wilson interval, at the effective number of episodes when ``seeds``
    (one per flag) cluster them."""
    n, k = len(flags), int(sum(flags))
    if n == 0:
        return (math.nan, math.nan, math.nan)
    deff = design_effect(np.asarray(flags, dtype=float), np.asarray(seeds)) if seeds is not None else 1.0
    lo, hi = proportion_ci(k / deff, n / deff)
    return (k / n, float(lo), float(hi))


def mean(
    values: list[float], seeds: list[int] | None = None, bounds: tuple[float, float] = (-math.inf, math.inf)
) -> Interval:
    """The mean of the finite ``values`` with its Student-t 95% interval (nan without values), at the effective
    number of values when ``seeds`` (one per value) cluster them: a mean of three seeds' values is not known
    to the normal approximation's precision. The interval is cut to ``bounds``, the range the quantity can take
    (a mean in [0, 1] is not below 0, whatever the t interval of two values says)."""
    v = np.asarray(values, dtype=float)
    keep = np.isfinite(v)
    v = v[keep]
    if v.size == 0:
        return (math.nan, math.nan, math.nan)
    deff = design_effect(v, np.asarray(seeds)[keep]) if seeds is not None else 1.0
    n_eff = v.size / deff
    half = float(t_dist.ppf(0.975, max(n_eff - 1, 1))) * v.std(ddof=1) / math.sqrt(n_eff) if v.size > 1 else math.inf
    return (float(v.mean()), float(max(v.mean() - half, bounds[0])), float(min(v.mean() + half, bounds[1])))


def success(cond: dict[str, list]) -> Interval:
    """The success rate of a condition's episodes, clustered by seed."""
    return rate(cond["success"], cond["seed"])


def by_seed(cond: dict[str, list]) -> str:
    """The success rate of each seed's episodes, in seed order: ``"0.37, 0.57"``."""
    flags, seeds = np.asarray(cond["success"], dtype=float), np.asarray(cond["seed"])
    return ", ".join(f"{flags[seeds == s].mean():.2f}" for s in np.unique(seeds))


def failure(cond: dict[str, list]) -> Interval:
    """The failure rate of a condition's episodes: those with any violating step, clustered by seed."""
    return rate([v > 0 for v in cond["violating_steps"]], cond["seed"])


def episode_mean(cond: dict[str, list], key: str) -> Interval:
    """The mean over a condition's episodes of the per-episode ``key``, clustered by seed (nan if not recorded)."""
    return mean(cond.get(key, []), cond["seed"])


def compare(a: Interval, b: Interval) -> str:
    """``"higher"`` / ``"lower"`` if ``a``'s interval lies wholly above / below ``b``'s, else ``"not separated"``."""
    if a[1] > b[2]:
        return "higher"
    if a[2] < b[1]:
        return "lower"
    return "not separated"


def fmt(x: Interval, digits: int = 2) -> str:
    """``mean [low, high]``; ``—`` without values; ``mean (one value)`` where there is no interval."""
    if not np.isfinite(x[0]):
        return "—"
    if not (np.isfinite(x[1]) and np.isfinite(x[2])):
        return f"{x[0]:.{digits}f} (one value)"
    return f"{x[0]:.{digits}f} [{x[1]:.{digits}f}, {x[2]:.{digits}f}]"


def pooled(study: dict[str, Any]) -> dict[tuple[str, str, str, str], dict[str, dict[str, list]]]:
    """``(env, cell, size, mode) -> condition -> per-episode lists`` over the seeds (plus ``"_meta"``: the
    tasks' parameter counts, checkpoint sizes and units)."""
    groups: dict[tuple[str, str, str, str], dict[str, dict[str, list]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for r in study["tasks"]:
        t = r["task"]
        g = groups[(t["env_id"], t["cell"], t["size"], t["mode"])]
        for name, cond in r["conditions"].items():
            for k, v in cond["episodes"].items():
                g[name][k].extend(v)
            g[name]["seed"].extend([t["seed"]] * len(cond["episodes"]["success"]))
            if cond["episodes"]["ep_len"]:
                g[name]["dt"] = [cond["dt"]]
        g["_meta"]["params"].append(r["params"])
        g["_meta"]["checkpoint_bytes"].append(r["checkpoint_bytes"])
        g["_meta"]["units"].append(t["units"])
        g["_meta"]["train_s"].append(r["train_s"])
        g["_meta"]["task_s"].append(r["train_s"] + r.get("measure_s", 0.0))
        trees = r.get("trees")
        g["_meta"]["tree_r2"].append(trees["median_r2"] if trees else math.nan)
        g["_meta"]["concentration"].append(trees["mean_concentration"] if trees else math.nan)
    return groups


def time_to_goal(cond: dict[str, list]) -> Interval:
    """Mean seconds to success over the successful episodes."""
    dt = cond.get("dt", [math.nan])[0]
    won = [(n * dt, seed) for n, ok, seed in zip(cond["ep_len"], cond["success"], cond["seed"], strict=True) if ok]
    return mean([t for t, _ in won], [seed for _, seed in won])


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _plot_noise(groups: dict, env: str, noise: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for (e, cell, size, mode), g in sorted(groups.items()):
        if e != env or size != "matched" or mode not in ("barrier", "none"):
            continue
        ax = axes[0 if mode == "barrier" else 1]
        ys = [success(g[f"noise {s:g}"]) for s in noise]
        ax.errorbar(noise, [y[0] for y in ys], yerr=[[y[0] - y[1] for y in ys], [y[2] - y[0] for y in ys]],
                    label=cell, capsize=2, marker="o", ms=3)  # fmt: skip
    for ax, mode in zip(axes, ("barrier", "none"), strict=True):
        ax.set_xlabel("observation noise σ")
        ax.set_ylabel("success rate")
        ax.set_ylim(-0.05, 1.05)
        ax.set_title(f"{env.split('/')[-1]}: {mode} mode")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def claims(groups: dict, envs: list[str], noise: list[float], jitter: list[float]) -> list[str]:
    """The claims, each with what the intervals say on each environment."""
    lines = []
    worst = f"noise {max(noise):g}"
    tests = [("compact (nominal success at matched size)", NOMINAL),
             (f"robust to input noise (success at σ = {max(noise):g})", worst)]  # fmt: skip
    if jitter:
        tests.append((f"handles irregular sampling (success at jitter {max(jitter):g})", f"jitter {max(jitter):g}"))
    for env in envs:
        name = env.split("/")[-1]
        ltc = groups.get((env, "ltc", "matched", "barrier"))
        if ltc is None:
            continue
        others = [(c, g) for (e, c, s, m), g in sorted(groups.items())
                  if e == env and s == "matched" and m == "barrier" and c != "ltc"]  # fmt: skip
        for label, cond in tests:
            verdicts = {c: compare(success(ltc[cond]), success(g[cond])) for c, g in others}
            higher = [c for c, v in verdicts.items() if v == "higher"]
            lower = [c for c, v in verdicts.items() if v == "lower"]
            text = f"- **{name}, LTC {label}:** "
            text += f"above {', '.join(higher)}" if higher else "above no other cell"
            text += f"; below {', '.join(lower)}" if lower else ""
            text += f"; not separated from {', '.join(c for c, v in verdicts.items() if v == 'not separated')}" if (
                len(higher) + len(lower) < len(verdicts)) else ""  # fmt: skip
            lines.append(text + ".")
        withheld = WITHHELD.format(max(jitter)) if jitter else None
        if withheld in ltc:
            given, blind = success(ltc[f"jitter {max(jitter):g}"]), success(ltc[withheld])
            lines.append(
                f"- **{name}, LTC uses each sample's elapsed time (jitter {max(jitter):g}):** success given it "
                f"against withheld: {compare(given, blind)} ({fmt(given)} against {fmt(blind)})."
            )
        if FIXED in ltc:
            learned, fixed = time_to_goal(ltc[NOMINAL]), time_to_goal(ltc[FIXED])
            s_l, s_f = success(ltc[NOMINAL]), success(ltc[FIXED])
            ltc_c = mean(ltc["_meta"]["concentration"], bounds=UNIT)
            beaten = [
                c for c, g in others if compare(ltc_c, mean(g["_meta"]["concentration"], bounds=UNIT)) == "higher"
            ]
            lines.append(
                f"- **{name}, LTC interpretable (decision concentration of its neurons' trees, "
                f"{fmt(ltc_c)}):** above {', '.join(beaten) if beaten else 'no other cell'}."
            )
            i_l, i_f = (episode_mean(ltc[c], "mean_intervention") for c in (NOMINAL, FIXED))
            if learned[1] == learned[2] == fixed[1] == fixed[2]:  # e.g. a task whose success is lasting the episode
                timing = f"every successful episode of both lasts {learned[0]:.1f} s"
            else:
                timing = f"time to goal {compare(learned, fixed)} ({fmt(learned, 1)} s against {fmt(fixed, 1)} s)"
            lines.append(
                f"- **{name}, BarrierNet less conservative than the fixed-gain filter (same LTC):** success "
                f"{compare(s_l, s_f)} ({fmt(s_l)} against {fmt(s_f)}); {timing}; mean intervention "
                f"{compare(i_l, i_f)} ({fmt(i_l, 3)} against {fmt(i_f, 3)})."
            )
    return lines


def provenance(study: dict[str, Any]) -> str:
    """Where the page's numbers come from: the commit, or, when the records were made at other commits than
    the gathering one (a grid continued over sessions), each commit with its number of records."""
    made = Counter(r.get("commit", "unrecorded") for r in study["tasks"])
    if set(made) <= {study["commit"]}:
        return f"at commit `{study['commit']}`"
    runs = ", ".join(f"`{c}` ({n})" for c, n in sorted(made.items()))
    return f"from tasks run at commit {runs}, gathered at commit `{study['commit']}`"


def machines(study: dict[str, Any]) -> str:
    """The machines the records were made on, each with its number of records: ``"AMD EPYC, 2 cores (75)"``."""
    made = Counter(
        f"{m['cpu']}, {m['cores']} cores" if (m := r.get("machine")) else "an unrecorded machine"
        for r in study["tasks"]
    )
    return "; ".join(f"{name} ({n})" for name, n in sorted(made.items()))


def guarded_breaches(groups: dict, env: str, names: list[str]) -> tuple[int, int, float]:
    """Over the policies with a safety layer (barrier and filter modes, every cell and size) on ``env``, in the
    conditions ``names``: the episodes with a violating step, the episodes, and the lowest barrier value."""
    conds = [g[c] for k, g in groups.items() if k[0] == env and k[3] != "none" for c in names if c in g]
    hit = sum(int(v > 0) for c in conds for v in c["violating_steps"])
    low = min((float(h) for c in conds for h in c["min_barrier"]), default=math.nan)
    return hit, sum(len(c["violating_steps"]) for c in conds), low


def write_report(study: dict[str, Any], page: Path, assets: Path, command: str) -> Path:
    """``page`` (markdown) and its plots under ``assets`` from a gathered ``study``; returns ``page``."""
    groups = pooled(study)
    envs = list(dict.fromkeys(k[0] for k in groups))
    noise, jitter = study["noise"], study.get("jitter", [])
    rel = Path(assets.name)
    cfg = study["config"]
    compute = sum(r["train_s"] + r.get("measure_s", 0.0) for r in study["tasks"]) / 60
    seeds = ", ".join(str(k) for k in sorted({r["task"]["seed"] for r in study["tasks"]}))
    partial = (
        f"{len(study['missing'])} missing: a partial grid, which the command continues"
        if study["missing"]
        else "0 missing"
    )
    out = [
        "# Results: the claims behind liquid networks and BarrierNet, measured",
        "",
        f"Made by `{command}` {provenance(study)}: {len(study['tasks'])} runs "
        f"({partial}), {compute:.0f} CPU-minutes of tasks, on {machines(study)}. "
        f"Every policy is trained by DAgger through its safety layer (updates: {cfg['updates']}, "
        f"demonstrations: {cfg['demos']}, DAgger rounds: {cfg['dagger_rounds']}) and measured on "
        f"{cfg['episodes']} held-out episodes per condition and seed (seeds {seeds} of {cfg['seeds']}). "
        "Intervals are 95%: Wilson for rates, Student t for means, over the seeds' pooled episodes counted at their "
        "effective number (Kish's design effect of the seeds: seeds that disagree widen them), cut to the range of a "
        "bounded quantity. A claim is stated "
        'only where the intervals separate; "not separated" means these runs cannot tell.',
        "",
        "## The claims",
        "",
        *claims(groups, envs, noise, jitter),
        "",
    ]
    for env in envs:
        name = env.split("/")[-1]
        keys = sorted(k for k in groups if k[0] == env)
        out += [f"## {name}", "", "### Nominal episodes and compactness", ""]
        rows = []
        for _, cell, size, mode in keys:
            g = groups[(env, cell, size, mode)]
            m = g["_meta"]
            rows.append([cell, size, str(m["units"][0]), f"{int(np.mean(m['params'])):,}",
                         f"{np.mean(m['checkpoint_bytes']) / 1024:.0f}", mode, fmt(success(g[NOMINAL])),
                         by_seed(g[NOMINAL]), fmt(failure(g[NOMINAL])), f"{int(sum(g[NOMINAL]['violating_steps'])):,}",
                         fmt(episode_mean(g[NOMINAL], "mean_step_ms"), 3),
                         f"{np.mean(m['train_s']) / 60:.1f}", fmt(mean(m["tree_r2"], bounds=R2)),
                         fmt(mean(m["concentration"], bounds=UNIT))])  # fmt: skip
        out += _table(["cell", "size", "units", "params", "checkpoint KB", "mode", "success", "success by seed",
                       "failure rate", "violating steps", "step ms", "train min", "trees: R² (median)",
                       "decision concentration"], rows)  # fmt: skip
        plot = assets / f"noise_{name.split('-')[0].lower()}.png"
        _plot_noise(groups, env, noise, plot)
        out += ["", "### Observation noise", "", f"![success against noise]({rel / plot.name})", ""]
        rows = [[cell, size, mode, *(fmt(success(groups[(env, cell, size, mode)][f"noise {s:g}"]))
                                     for s in noise)] for _, cell, size, mode in keys]  # fmt: skip
        out += _table(["cell", "size", "mode", *(f"σ = {s:g}" for s in noise)], rows)
        timing = [f"jitter {j:g}" for j in jitter] + ([WITHHELD.format(max(jitter))] if jitter else [])
        timing = [c for c in timing if any(c in groups[k] for k in keys)]
        if timing:
            out += ["", "### Sampling jitter (success; failure rate = any violating step)", "",
                    "Each control period lasts dt (1 + j U(-1, 1)); the policy is given each sample's elapsed time "
                    "(the continuous-time cells integrate over it; lstm, gru and mlp step once whatever it is), "
                    "except in the *dt withheld* column. The safety layer's sampled-data certificate is made for "
                    "the nominal dt: under jitter it does not cover the longer periods, so the failure rates "
                    "here are measured, not guaranteed.", ""]  # fmt: skip
            rows = []
            for k in keys:
                g = groups[k]
                cells = [f"{fmt(success(g[c]))}; {fmt(failure(g[c]))}" if c in g else "—" for c in timing]
                rows.append([k[1], k[2], k[3], *cells])
            out += _table(["cell", "size", "mode", *timing], rows)
            sealed = sorted({c for k in keys for c in groups[k] if c != "_meta" and not c.startswith("jitter")})
            hit, n, _ = guarded_breaches(groups, env, sealed)
            parts = [f"{hit:,} of {n:,} episodes without jitter (nominal, noisy, unseen scenes, fixed gains)"]
            for c in timing:
                hit, n, low = guarded_breaches(groups, env, [c])
                parts.append(f"{hit:,} of {n:,} at {c} (lowest barrier value {low:.1e})")
            out += ["", "With a safety layer (barrier and filter modes, every cell), episodes with a violating "
                    "step: " + "; ".join(parts) + "."]  # fmt: skip
        unseen = [c for c in groups[keys[0]]
                  if c not in ("_meta", FIXED) and not c.startswith(("noise", "jitter"))]  # fmt: skip
        if unseen:
            out += ["", "### Unseen scenes (success; failure rate = any violating step)", ""]
            rows = []
            for _, cell, size, mode in keys:
                g = groups[(env, cell, size, mode)]
                cells = [f"{fmt(success(g[c]))}; {fmt(failure(g[c]))}" for c in unseen]
                rows.append([cell, size, mode, *cells])
            out += _table(["cell", "size", "mode", *unseen], rows)
        pairs = [k for k in keys if FIXED in groups[k]]
        if pairs:
            out += ["", "### Learned gains against fixed gains around the same network", ""]
            rows = []
            for k in pairs:
                g = groups[k]
                for label, c in (("learned (BarrierNet)", NOMINAL), ("fixed (filter)", FIXED)):
                    rows.append([k[1], k[2], label, fmt(success(g[c])), fmt(time_to_goal(g[c]), 1),
                                 fmt(episode_mean(g[c], "path_length"), 2),
                                 fmt(episode_mean(g[c], "mean_intervention"), 3),
                                 fmt(episode_mean(g[c], "min_barrier"), 3)])  # fmt: skip
            out += _table(["cell", "size", "gains", "success", "time to goal s", "path length m",
                           "mean intervention", "min barrier"], rows)  # fmt: skip
        out.append("")
    lengths = study.get("expressivity", {})
    if lengths:
        out += ["## Expressivity: trajectory length at initialisation", "",
                "Raghu et al.'s measure: a unit circle in the normalised observation space, fed as a 400-step "
                "sequence; the length of the network's output path over the circle's (5 initialisations, mean "
                "[95% interval]).", ""]  # fmt: skip
        rows = [[key.split("|")[0].split("/")[-1], key.split("|")[1], fmt(mean(v), 3)] for key, v in lengths.items()]
        out += [*_table(["env", "cell", "trajectory length"], rows), ""]
    if study["failed"] or study["missing"]:
        out += ["## Missing runs", "", *(f"- `{k}`: {study['failed'].get(k, 'not run')}" for k in study["missing"]), ""]
    page.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(page, "\n".join(out) + "\n")
    return page
