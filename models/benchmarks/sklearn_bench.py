"""scikit-learn's IsolationForest on the same benchmarks as iforest-bench.

Run with Debian's interpreter (/usr/bin/python3, package python3-sklearn).
Prints JSON: speed (fit 100 trees x 256 on 100,000 x 16; score_samples on
1,000,000 x 16 with n_jobs=1 and n_jobs=-1) or accuracy (ROC AUC over seeds
on every <name>.csv in a directory, label column `label`).
"""
import argparse
import glob
import json
import os
import statistics
import time

import numpy as np
import sklearn
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score


def median_time(repeats, fn):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def speed(fit_rows, score_rows, d, repeats):
    rng = np.random.default_rng(1)
    train = rng.standard_normal((fit_rows, d))
    test = np.random.default_rng(2).standard_normal((score_rows, d))
    out = []
    for jobs in (1, -1):
        holder = {}

        def fit():
            holder["m"] = IsolationForest(n_estimators=100, max_samples=256, n_jobs=jobs, random_state=1).fit(train)

        fit_s = median_time(repeats, fit)
        score_s = median_time(max(1, repeats // 2), lambda: holder["m"].score_samples(test))
        out.append({
            "implementation": f"scikit-learn {sklearn.__version__} IsolationForest (n_jobs={jobs})",
            "fit_seconds": fit_s,
            "score_rows_per_second": score_rows / score_s,
            "ns_per_row_per_tree": score_s * 1e9 / score_rows / 100,
            "n_jobs": jobs,
            "cores": os.cpu_count(),
        })
    return out


def accuracy(data_dir, seeds):
    out = []
    for path in sorted(glob.glob(os.path.join(data_dir, "*.csv"))):
        raw = np.genfromtxt(path, delimiter=",", names=True)
        names = [n for n in raw.dtype.names if n != "label"]
        x = np.column_stack([raw[n] for n in names])
        y = raw["label"].astype(int)
        aucs = []
        for seed in range(seeds):
            m = IsolationForest(n_estimators=100, max_samples=256, random_state=seed).fit(x)
            aucs.append(roc_auc_score(y, -m.score_samples(x)))
        out.append({
            "dataset": os.path.basename(path)[:-4],
            "rows": len(y), "features": len(names), "anomalies": int(y.sum()),
            "variant": f"scikit-learn {sklearn.__version__}",
            "aucs": aucs, "mean": statistics.mean(aucs), "std": statistics.stdev(aucs),
        })
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=["speed", "accuracy"], default="speed")
    p.add_argument("--data")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--fit-rows", type=int, default=100_000)
    p.add_argument("--score-rows", type=int, default=1_000_000)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    if a.mode == "speed":
        res = speed(a.fit_rows, a.score_rows, 16, a.repeats)
    else:
        res = accuracy(a.data, a.seeds)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
