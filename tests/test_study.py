"""The claims study: its grid, a tiny run on local Ray (resumed, not re-run), its budget guard, the page."""

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest

from safeliquid import cli
from safeliquid.envs import ENV_IDS
from safeliquid.machine import cpu_model
from safeliquid.metrics import proportion_ci
from safeliquid.train.study import (
    BUDGET,
    ENV_TRAIN,
    NOISE,
    QUICK,
    StudyConfig,
    _policy,
    grid,
    matched_units,
    n_params,
    run_study,
)
from safeliquid.train.study_report import (
    by_seed,
    claims,
    compare,
    design_effect,
    guarded_breaches,
    machines,
    mean,
    provenance,
    rate,
    write_report,
)

CART = "safeliquid/CartPoleRail-v0"
RECORDS = Path(__file__).resolve().parents[1] / "docs" / "results" / "grid"  # the page's committed grid
TINY = StudyConfig(envs=[CART], cells=["ltc", "mlp"], modes=["barrier"], large_cells=None, seeds=1, demos=2,
                   dagger_rounds=0, updates=2, episodes=1, cpus=2)  # fmt: skip


def test_matched_units_is_the_nearest_parameter_count():
    target = n_params(CART, "ltc", 19)
    for cell in ("lstm", "mlp"):
        u = matched_units(CART, cell, target)
        here = abs(n_params(CART, cell, u) - target)
        assert here <= abs(n_params(CART, cell, u + 1) - target)
        assert u == 1 or here <= abs(n_params(CART, cell, u - 1) - target)
        assert here < 0.1 * target  # "similar size"


def test_the_grid_holds_every_cell_mode_and_seed_once():
    cfg = replace(TINY, cells=["ltc", "gru"], modes=["barrier", "none"], seeds=2, large_cells=["ltc"])
    tasks = grid(cfg)
    keys = [t.key for t in tasks]
    assert len(keys) == len(set(keys)) == 2 * 2 * 2 + 2  # matched: cells x modes x seeds; large: ltc, barrier
    assert {t.units for t in tasks if t.cell == "ltc" and t.size == "matched"} == {19}
    assert {t.units for t in tasks if t.size == "large"} == {cfg.large_units}


def test_bad_study_options_name_the_option():
    with pytest.raises(ValueError, match=r"cells: \['transformer'\] unknown"):
        StudyConfig(cells=["transformer"])
    with pytest.raises(ValueError, match="seeds"):
        StudyConfig(seeds=0)


def test_every_environment_has_study_options_that_build_its_policy():
    """A wrong option name or value in an environment's recipe fails here, not hours into a grid."""
    assert set(ENV_TRAIN) == set(ENV_IDS)
    for env_id in ENV_IDS:
        policy = _policy(env_id, "ltc", 19)
        assert policy.config.prior == ENV_TRAIN[env_id].get("prior"), env_id


def test_a_tiny_grid_runs_on_local_ray_reports_a_failure_and_resumes_without_rerunning(tmp_path):
    cfg = replace(TINY, out=str(tmp_path / "grid"))
    blocked = tmp_path / "grid" / "runs" / "cartpolerail-mlp-matched-barrier-s0"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("a file where the run folder goes")  # the mlp task fails in its worker
    first = run_study(cfg, progress=False)
    assert list(first["failed"]) == first["missing"] == ["cartpolerail-mlp-matched-barrier-s0"]
    assert "FileExistsError" in first["failed"]["cartpolerail-mlp-matched-barrier-s0"]
    done = tmp_path / "grid" / "tasks" / "cartpolerail-ltc-matched-barrier-s0.json"
    stamp = done.stat().st_mtime_ns
    partial = run_study(replace(cfg, gather=True), progress=False)  # runs nothing: the blocked task stays missing
    assert partial["failed"] == {} and partial["missing"] == ["cartpolerail-mlp-matched-barrier-s0"]
    assert [r["key"] for r in partial["tasks"]] == ["cartpolerail-ltc-matched-barrier-s0"]
    half = write_report(partial, tmp_path / "partial" / "results.md", tmp_path / "partial" / "results", "c")
    assert (
        "(1 missing: a partial grid" in half.read_text()
        and "- `cartpolerail-mlp-matched-barrier-s0`: not run" in half.read_text()
    )
    blocked.unlink()
    second = run_study(cfg, progress=False)  # retries the failed task only
    assert second["failed"] == {} and second["missing"] == [] and done.stat().st_mtime_ns == stamp
    assert sorted(r["key"] for r in second["tasks"]) == ["cartpolerail-ltc-matched-barrier-s0",
                                                         "cartpolerail-mlp-matched-barrier-s0"]  # fmt: skip
    for r in second["tasks"]:
        conditions = r["conditions"]
        assert {"noise 0", "noise 0.3", "jitter 0.5", "mass x1.5", "fixed gains, same network"} <= set(conditions)
        assert ("jitter 0.5, dt withheld" in conditions) == (r["task"]["cell"] == "ltc")  # ODE cells only
        assert all(len(c["episodes"]["success"]) == 1 for c in conditions.values())
        assert all(c["episodes"]["path_length"][0] > 0 for c in conditions.values())
        assert r["params"] > 0 and r["checkpoint_bytes"] > 0 and 0 <= r["trees"]["mean_concentration"] <= 1
        assert r["commit"] == second["commit"]  # the record names the code it was made with
        assert r["machine"]["cpu"] == cpu_model() and r["machine"]["cores"] > 0  # and the CPU
    assert len(json.loads((tmp_path / "grid" / "study.json").read_text())["tasks"]) == 2
    with pytest.raises(ValueError, match=r"other \['updates'\]"):
        run_study(replace(cfg, updates=3), progress=False)
    page = write_report(second, tmp_path / "docs" / "results.md", tmp_path / "docs" / "results", "safeliquid study")
    text = page.read_text()
    assert "## CartPoleRail-v0" in text and "| ltc | matched | 19 |" in text
    assert "### Sampling jitter" in text and "LTC handles irregular sampling" in text and "path length m" in text
    assert "elapsed time (jitter 0.5):** success given it against withheld: not separated (" in text  # 1 episode
    assert (tmp_path / "docs" / "results" / "noise_cartpolerail.png").stat().st_size > 0


def test_the_committed_records_are_points_of_the_default_grid_at_its_budget():
    """docs/results/grid is what the results page is gathered from, and where a stopped grid continues."""
    cfg = StudyConfig()
    assert json.loads((RECORDS / "budget.json").read_text()) == {k: getattr(cfg, k) for k in BUDGET}
    tasks = {t.key: t for t in grid(cfg)}
    records = sorted((RECORDS / "tasks").glob("*.json"))
    assert records, "no committed task record"
    for path in records:
        record = json.loads(path.read_text())
        assert record["key"] == path.stem and asdict(tasks[path.stem]) == record["task"]
        episodes = {name: len(c["episodes"]["success"]) for name, c in record["conditions"].items()}
        assert {f"noise {s:g}" for s in NOISE} <= set(episodes) and set(episodes.values()) == {cfg.episodes}


def test_the_page_names_the_commits_its_records_were_made_at():
    study = {"commit": "b", "tasks": [{"commit": "b"}, {"commit": "b"}]}
    assert provenance(study) == "at commit `b`"
    study["tasks"] = [{"commit": "a"}, {"commit": "b"}, {"commit": "a"}]
    assert provenance(study) == "from tasks run at commit `a` (2), `b` (1), gathered at commit `b`"


def test_the_page_names_the_machines_its_records_were_made_on():
    epyc, xeon = {"cpu": "AMD EPYC", "cores": 2}, {"cpu": "Intel Xeon", "cores": 2}
    study = {"tasks": [{"machine": epyc}, {"machine": xeon}, {"machine": epyc}, {}]}
    assert machines(study) == "AMD EPYC, 2 cores (2); Intel Xeon, 2 cores (1); an unrecorded machine (1)"


def test_intervals_separate_only_when_they_do():
    assert compare(rate([True] * 50), rate([False] * 50)) == "higher"
    assert compare(rate([False] * 50), rate([True] * 50)) == "lower"
    assert compare(rate([True, False] * 5), rate([False, True] * 5)) == "not separated"
    assert mean([1.0, 2.0, 3.0])[0] == 2.0 and mean([1.0, 2.0, 3.0])[1] < 2.0 < mean([1.0, 2.0, 3.0])[2]
    assert mean([1.0, 2.0, 3.0])[2] == pytest.approx(2.0 + 4.303 / 3**0.5, abs=1e-3)  # t, 2 df: three seeds


def test_a_bounded_mean_keeps_its_interval_inside_its_range():
    free, cut = mean([0.1, 0.9]), mean([0.1, 0.9], bounds=(0.0, 1.0))
    assert free[1] < 0.0 and free[2] > 1.0  # two values: the t interval leaves [0, 1]
    assert cut == (free[0], 0.0, 1.0)
    assert mean([0.4, 0.5, 0.6], bounds=(0.0, 1.0)) == mean([0.4, 0.5, 0.6])  # inside: untouched


def test_guarded_breaches_count_only_the_policies_behind_a_layer():
    def cond(violating, lows):
        return {"violating_steps": violating, "min_barrier": lows}

    groups = {
        ("E", "ltc", "matched", "barrier"): {
            "jitter 0.5": cond([0, 3, 0], [0.1, -0.02, 0.3]),
            "noise 0": cond([0], [0.2]),
        },
        ("E", "mlp", "matched", "filter"): {"jitter 0.5": cond([1, 0], [-0.05, 0.1])},
        ("E", "mlp", "matched", "none"): {"jitter 0.5": cond([9, 9], [-1.0, -1.0])},  # no layer: not counted
        ("F", "ltc", "matched", "barrier"): {"jitter 0.5": cond([5], [-2.0])},  # another environment
    }
    assert guarded_breaches(groups, "E", ["jitter 0.5"]) == (2, 5, -0.05)
    assert guarded_breaches(groups, "E", ["noise 0"]) == (0, 1, 0.2)
    hit, n, low = guarded_breaches(groups, "E", ["unseen"])
    assert (hit, n) == (0, 0) and np.isnan(low)


def test_the_claims_state_only_what_the_intervals_separate():
    def cond(wins, lengths, intervention):
        return {"success": wins, "seed": [i % 2 for i in range(60)], "ep_len": lengths, "dt": [0.1],
                "mean_intervention": [intervention + 0.01 * (i % 3) for i in range(60)]}  # fmt: skip

    def group(rate, lengths):
        wins = [i < rate * 60 for i in range(60)]
        return {"noise 0": cond(wins, lengths, 0.1), "noise 0.3": cond(wins, lengths, 0.1),
                "fixed gains, same network": cond(wins, lengths, 0.2),  # the same network, twice the intervention
                "_meta": {"concentration": [0.5, 0.6]}}  # fmt: skip

    reaching, surviving = [50 + i % 5 for i in range(60)], [100] * 60  # steps of 0.1 s
    for lengths, timing in ((reaching, "time to goal not separated (5.2"),
                            (surviving, "every successful episode of both lasts 10.0 s")):  # fmt: skip
        groups = {("E", "ltc", "matched", "barrier"): group(0.2, lengths),
                  ("E", "mlp", "matched", "barrier"): group(0.95, lengths),
                  ("E", "gru", "matched", "barrier"): group(0.25, lengths)}  # fmt: skip
        lines = claims(groups, ["E"], [0.0, 0.3], [])
        assert "- **E, LTC compact (nominal success at matched size):** above no other cell; below mlp; " \
               "not separated from gru." in lines  # fmt: skip
        conservative = next(line for line in lines if "less conservative" in line)
        assert timing in conservative and "mean intervention lower" in conservative, conservative


def test_seeds_that_disagree_widen_the_interval_down_to_one_episode_per_seed():
    seeds = [0] * 30 + [1] * 30
    split = [True] * 30 + [False] * 30  # one seed always succeeds, the other never: two effective episodes
    assert design_effect(np.asarray(split, dtype=float), np.asarray(seeds)) == pytest.approx(30.0)
    assert rate(split, seeds) == pytest.approx((0.5, *proportion_ci(1, 2)))
    assert rate(split)[1] > 0.35  # the pooled episodes alone would call it 0.50 [0.38, 0.62]
    assert by_seed({"success": split, "seed": seeds}) == "1.00, 0.00"  # the page shows why
    alike = [True, False, False] * 20  # each seed 10 of 30: no seed effect, the pooled interval as it is
    assert design_effect(np.asarray(alike, dtype=float), np.asarray(seeds)) == 1.0
    assert rate(alike, seeds) == rate(alike)
    assert rate([True] * 60, seeds) == rate([True] * 60)  # every episode alike: no variance to inflate
    values = [1.0] * 30 + [3.0] * 30
    assert mean(values, seeds)[2] - mean(values, seeds)[1] > 5 * (mean(values)[2] - mean(values)[1])
    assert design_effect(np.arange(5.0), np.zeros(5)) == 1.0  # one seed: nothing to correct


def test_study_quick_sets_its_options_unless_given(monkeypatch):
    seen = []
    monkeypatch.setitem(cli.COMMANDS, "study", (seen.append, (StudyConfig,), "spy"))
    assert cli.main(["study", "--quick", "--seeds", "2"]) == 0
    cfg = seen[0]
    assert cfg.quick and cfg.seeds == 2 and cfg.updates == QUICK["updates"] and cfg.out == QUICK["out"]
    assert cli.main(["study", "--cells", "rnn"]) == 2
