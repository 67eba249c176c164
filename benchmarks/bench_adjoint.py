"""Backpropagation through the solver vs the adjoint method for the LTC, by sequence length.

    python benchmarks/bench_adjoint.py [--quick]

Both integrate the same ODE with torchdiffeq's fixed-step rk4 (``ode_unfolds`` 6
per control step); BPTT differentiates through the solver, the adjoint
integrates the sensitivity ODE backwards. Each configuration runs in a fresh
process so its peak resident memory (ru_maxrss minus the resident size before
the run) is its own. Gradient error: relative L2 distance of the adjoint's
parameter gradient from BPTT's, float64. Writes ``benchmarks/results/adjoint.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024


def child(steps: int, adjoint: bool, batch: int) -> None:
    import torch

    from safeliquid.nn import AutoNCP, LTCCell, ltc_odeint

    torch.set_num_threads(1)
    torch.manual_seed(0)
    cell = LTCCell(8, AutoNCP(19, 2)).double()
    x = torch.randn(batch, steps, 8, dtype=torch.float64)
    before = _rss_kib()
    t0 = time.perf_counter()
    y, h = ltc_odeint(cell, x, method="rk4", adjoint=adjoint)
    (y.square().sum() + h.sum()).backward()
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    grad = torch.cat([p.grad.flatten() for p in cell.parameters()])
    torch.save(grad, f"/tmp/_sl_grad_{steps}_{int(adjoint)}.pt")
    print(json.dumps({"peak_mib": (peak - before) / 1024, "seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="sequence lengths 16 and 32 only")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], bool(args.child[1]), args.batch)
        return
    import torch
    from _util import write

    lengths = [16, 32] if args.quick else [16, 32, 64, 128, 256, 512]
    rows = []
    for steps in lengths:
        row: dict = {"steps": steps}
        for adjoint in (False, True):
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(steps), str(int(adjoint)), "--batch", str(args.batch)],
                check=True,
                capture_output=True,
                text=True,
            )
            row["adjoint" if adjoint else "bptt"] = json.loads(out.stdout.strip().splitlines()[-1])
        g_b = torch.load(f"/tmp/_sl_grad_{steps}_0.pt")
        g_a = torch.load(f"/tmp/_sl_grad_{steps}_1.pt")
        row["grad_rel_error"] = float((g_a - g_b).norm() / g_b.norm())
        rows.append(row)
        print(
            f"T={steps:4d}  BPTT {row['bptt']['peak_mib']:7.1f} MiB {row['bptt']['seconds']:6.2f} s | "
            f"adjoint {row['adjoint']['peak_mib']:7.1f} MiB {row['adjoint']['seconds']:6.2f} s | "
            f"grad rel. error {row['grad_rel_error']:.2e}",
            flush=True,
        )
    path = write("adjoint", {"batch": args.batch, "solver": "rk4", "ode_unfolds": 6, "results": rows})
    print("\n| T | BPTT peak MiB | adjoint peak MiB | BPTT s | adjoint s | adjoint grad rel. error |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['steps']} | {r['bptt']['peak_mib']:.1f} | {r['adjoint']['peak_mib']:.1f} | "
            f"{r['bptt']['seconds']:.2f} | {r['adjoint']['seconds']:.2f} | {r['grad_rel_error']:.1e} |"
        )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
