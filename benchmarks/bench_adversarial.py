"""Adversaries against the safety layer: every environment, every adversary, with and without the filter.

    python benchmarks/bench_adversarial.py [--steps 10000] [--env ENV ...] [--dt-jitter J]

For each environment and each of its adversaries (:mod:`safeliquid.envs.adversaries`), ``--steps`` steps
through :class:`~safeliquid.safety.SafetyFilterWrapper` (each environment in its default, certified
configuration; the layer with the default gains, the
sampled-data correction and the fallback) and the same steps without it, to show the adversary really
violates. Counts violating steps (``cost``), contacts, the lowest barrier, QP solves that were not
optimal, the layer's fallbacks and unreported infeasible solves. Writes
``benchmarks/results/adversarial.json`` (``adversarial_jitter<J>.json`` with ``--dt-jitter``: every control
period drawn in dt (1 ± J), outside what the certificate covers) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import time
import warnings

import gymnasium as gym
import torch
from _util import write

import safeliquid.envs  # noqa: F401 - registers the environments
from safeliquid.envs import ENV_IDS
from safeliquid.envs.adversaries import adversaries
from safeliquid.safety import SafetyFilterWrapper, UncertifiedWarning
from safeliquid.safety.adversaries import attack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10_000, help="steps per environment and adversary")
    parser.add_argument("--env", nargs="*", default=list(ENV_IDS), help="environments (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="first episode seed")
    parser.add_argument("--dt-jitter", type=float, default=0.0, help="sampling jitter of the environments (0: none)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for env_id in args.env:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UncertifiedWarning)
            probe = gym.make(env_id)
            probe.reset(seed=args.seed)
            certificate = probe.unwrapped.constraints.certificate
            probe.close()
        uncertified = [str(w.message) for w in caught if issubclass(w.category, UncertifiedWarning)]
        for index, adversary in enumerate(adversaries(env_id)):
            for filtered in (True, False):
                env = gym.make(env_id, dt_jitter=args.dt_jitter)
                if filtered:
                    env = SafetyFilterWrapper(env)
                t0 = time.perf_counter()
                result = attack(env, adversaries(env_id)[index], args.steps, seed=args.seed)
                env.close()
                row = {
                    "env": env_id,
                    "adversary": adversary.name,
                    "filter": filtered,
                    **result.to_dict(),
                    "seconds": time.perf_counter() - t0,
                    "certified": bool(certificate is not None and certificate.certified),
                    "uncertified_warning": uncertified[0] if uncertified else None,
                }
                rows.append(row)
                print(
                    f"{env_id:28s} {adversary.name:18s} filter={filtered!s:5s} violating {result.violating_steps:6d} "
                    f"contacts {result.contacts:5d} min h {result.min_h:+.3g} not-optimal {result.infeasible:5d} "
                    f"fallbacks {result.fallbacks:5d} unreported {result.unreported_infeasible}",
                    flush=True,
                )
    name = "adversarial" + (f"_jitter{args.dt_jitter:g}" if args.dt_jitter else "")
    path = write(name, {"steps": args.steps, "seed": args.seed, "dt_jitter": args.dt_jitter, "results": rows})
    head = ["env", "adversary", "filter", "violating steps", "contacts", "min h", "QP not optimal", "fallbacks"]
    print("\n| " + " | ".join([*head, "unreported"]) + " |")
    print("|---" * (len(head) + 1) + "|")
    for r in rows:
        cells = [r["env"].split("/")[1], r["adversary"], "on" if r["filter"] else "off", r["violating_steps"]]
        cells += [r["contacts"], f"{r['min_h']:.3g}", r["infeasible"], r["fallbacks"], r["unreported_infeasible"]]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
