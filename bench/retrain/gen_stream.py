#!/usr/bin/env python3
"""A month-by-month stream of labelled transactions whose categories appear and disappear, for
bench/retrain/run (Python 3 stdlib only; reuses scripts/gen_transactions.py's vocabulary).

Each month gets its own train.csv and val.csv (its held-out evaluation set, `--unseen` of whose
rows use merchants train never shows) under OUT/month-N/, drawn from that month's categories
only, stratified by the generator's class weights. The merchant pools are the same all months
(one seeded split of brands into seen and unseen); each month draws new transactions from them.
The schedule (month -> categories) is written to OUT/stream.json.

Deterministic: the same arguments give byte-identical files.

Usage:
  gen_stream.py --out-dir DIR [--rows 800] [--eval-fraction 0.25] [--unseen 0.2] [--seed 21]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
import gen_transactions as gt  # noqa: E402

# Month 1 leaves three categories out; later months drop and add categories (one dropped
# category comes back in month 4, which the month-3 model no longer knows).
ALL = [c.name for c in gt.CATEGORIES]
MONTH1 = [n for n in ALL if n not in ("HEALTH", "SUBSCRIPTIONS", "HOUSING")]
CHANGES = [  # (dropped, added) at the start of months 2, 3, 4
    (["FEES_CHARGES"], ["HEALTH"]),
    ([], ["SUBSCRIPTIONS", "HOUSING"]),
    (["CASH"], ["FEES_CHARGES"]),
]


def schedule(months: int) -> list:
    """Category names per month (in the generator's order) and the changes that led there."""
    out = [{"month": 1, "categories": list(MONTH1), "dropped": [], "added": []}]
    for m in range(2, months + 1):
        dropped, added = CHANGES[(m - 2) % len(CHANGES)]
        prev = set(out[-1]["categories"])
        dropped = [d for d in dropped if d in prev]
        added = [a for a in added if a not in prev]
        cats = (prev - set(dropped)) | set(added)
        out.append({"month": m, "categories": [n for n in ALL if n in cats],
                    "dropped": dropped, "added": added})
    return out


def split(g: gt.Gen, pools: gt.Pools, names: list, n: int, unseen_rate: float) -> list:
    cats = [c for c in gt.CATEGORIES if c.name in names]
    rows = []
    for cat, k in zip(cats, gt.quotas(n, [c.weight for c in cats])):
        rows.extend((gt.describe(g, pools, cat, g.r.random() < unseen_rate), cat.name)
                    for _ in range(k))
    g.r.shuffle(rows)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", required=True)
    p.add_argument("--months", type=int, default=4)
    p.add_argument("--rows", type=int, default=800, help="train rows per month")
    p.add_argument("--eval-fraction", type=float, default=0.25,
                   help="evaluation rows per train row, each month (default 0.25)")
    p.add_argument("--unseen", type=float, default=0.2,
                   help="share of evaluation rows from merchants train never shows (default 0.2)")
    p.add_argument("--holdout", type=float, default=0.2,
                   help="share of each class's brands and business kinds kept out of train")
    p.add_argument("--seed", type=int, default=21)
    a = p.parse_args(argv)
    if a.months < 1:
        p.error("--months must be at least 1")
    pools = gt.Pools(random.Random(a.seed), a.holdout)
    plan = schedule(a.months)
    n_eval = max(len(ALL), round(a.rows * a.eval_fraction))
    for month in plan:
        g = gt.Gen(random.Random(a.seed * 1000 + month["month"]))
        d = os.path.join(a.out_dir, f"month-{month['month']}")
        os.makedirs(d, exist_ok=True)
        gt.write_csv(os.path.join(d, "train.csv"), split(g, pools, month["categories"], a.rows, 0.0))
        gt.write_csv(os.path.join(d, "val.csv"), split(g, pools, month["categories"], n_eval, a.unseen))
        month.update(train_rows=a.rows, val_rows=n_eval)
    with open(os.path.join(a.out_dir, "stream.json"), "w", encoding="utf-8") as f:
        json.dump({"args": vars(a), "months": plan}, f, indent=1)
    for month in plan:
        print(f"month {month['month']}: {len(month['categories'])} categories, "
              f"dropped {month['dropped'] or '-'}, added {month['added'] or '-'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
