"""Cells against the reference library ncps 1.0.1, same shapes, one process, one thread.

    python benchmarks/bench_cells.py [--quick]

Measures (1) one control step at batch 1 (AutoNCP(19 units, 2 outputs), 8 inputs,
ode_unfolds 6, gradients off, as in a control loop) and (2) forward + backward
on batch 64 x sequence 32 with the same wiring. Writes
``benchmarks/results/cells.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from ncps.torch import LTC as RefLTC
from ncps.torch import WiredCfCCell as RefWiredCfC
from ncps.wirings import AutoNCP as RefAutoNCP

sys.path.insert(0, str(Path(__file__).parent))
from _util import timeit, write

from safeliquid.nn import AutoNCP, CfCCell, Sequence, ltc_from_ncps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    n_step, n_train = (300, 3) if args.quick else (5000, 30)

    ref_seq = RefLTC(8, RefAutoNCP(19, 2), batch_first=True, ode_unfolds=6)
    ours = ltc_from_ncps(ref_seq)  # identical parameters and wiring
    ref_cell = ref_seq.rnn_cell
    x1, h1 = torch.randn(1, 8), torch.zeros(1, 19)
    rows = {}
    with torch.inference_mode():
        rows["ltc_step_b1"] = {
            "ncps": timeit(lambda: ref_cell(x1, h1, 1.0), n_step),
            "safeliquid": timeit(lambda: ours(x1, h1, 1.0), n_step),
        }
    ref_cfc = RefWiredCfC(8, RefAutoNCP(19, 2))
    our_cfc = CfCCell(8, AutoNCP(19, 2))
    with torch.inference_mode():
        rows["cfc_step_b1"] = {
            "ncps": timeit(lambda: ref_cfc(x1, h1, 1.0), n_step),
            "safeliquid": timeit(lambda: our_cfc(x1, h1, 1.0), n_step),
        }

    xs = torch.randn(64, 32, 8)
    seq = Sequence(ours)

    def train_ref() -> None:
        ref_seq.zero_grad()
        ref_seq(xs)[0].square().mean().backward()

    def train_ours() -> None:
        ours.zero_grad()
        seq(xs)[0].square().mean().backward()

    rows["ltc_fwd_bwd_b64_t32"] = {
        "ncps": timeit(train_ref, n_train, warmup=3),
        "safeliquid": timeit(train_ours, n_train, warmup=3),
    }
    for row in rows.values():
        row["speedup"] = row["ncps"]["median_us"] / row["safeliquid"]["median_us"]
    path = write("cells", {"quick": args.quick, "results": rows})

    print("| measurement | ncps 1.0.1 median (p99) | safeliquid median (p99) | speed-up |")
    print("|---|---|---|---|")
    for name, row in rows.items():
        a, b = row["ncps"], row["safeliquid"]
        unit, div = ("ms", 1e3) if a["median_us"] > 1e4 else ("µs", 1.0)
        print(
            f"| {name} | {a['median_us'] / div:.1f} {unit} ({a['p99_us'] / div:.1f}) "
            f"| {b['median_us'] / div:.1f} {unit} ({b['p99_us'] / div:.1f}) | {row['speedup']:.1f}x |"
        )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
