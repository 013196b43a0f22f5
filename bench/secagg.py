"""`make bench`: what secure aggregation costs per round, in time and in accuracy.

The demo's breast-cancer rows (scikit-learn's Wisconsin set, the demo's 20 % held out) are dealt
to 3 and to 10 sites; the demo's model (logistic regression, the launch defaults) is trained
with FedAvg for 10 rounds twice in one process: plainly (``run_in_process``) and with every round
securely aggregated (``run_secure_in_process``: all four stages of the protocol, every site's
keys, shares, masks and the coordinator's unmasking). Both runs are scored on the held-out rows.

Per round the bench reports the secure aggregation's extra time two ways:

- ``critical path``: the slowest site of each stage plus the coordinator, as a deployment
  runs (sites in parallel on their own machines); this is the figure held to the target;
- ``all sites in one process``: every site's work one after the other plus the coordinator
  (the CPU the whole alliance spends).

It excludes the broker's round trips for the three extra stages (measured by ``bench/federation.py``
for one stage: its "overhead incl. hand-off").

The figures go to ``bench/results/secagg-<UTC timestamp>.json`` and a summary is printed.
"""

import argparse
import datetime
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from projects.federation import secagg  # noqa: E402
from projects.federation.data import file_sha256  # noqa: E402
from projects.federation.loop import LocalSite, run_in_process, run_secure_in_process  # noqa: E402
from projects.federation.protocol import LearningSpec, RoundTask  # noqa: E402
from projects.federation.site import evaluate_on_file  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TARGET_SECONDS_10 = 0.150  # extra time per round at 10 sites (critical path)
CLIP = 100.0
LABEL = "diagnosis"
STAGES = ("encode", "advertise", "share_keys", "masked", "unmask")


def write_sites(folder: Path, n: int) -> tuple[list[LocalSite], Path, LearningSpec]:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    features = [str(name).replace(" ", "_") for name in bunch.feature_names]
    diagnosis = 1 - bunch.target
    rng = np.random.RandomState(1234)
    order = rng.permutation(len(diagnosis))
    n_holdout = round(0.2 * len(order))
    holdout, rest = order[:n_holdout], order[n_holdout:]

    def write(path: Path, rows: np.ndarray) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [",".join([*features, LABEL])]
        lines += [
            ",".join([*(f"{v:.6g}" for v in bunch.data[i]), str(int(diagnosis[i]))]) for i in rows
        ]
        path.write_text("\n".join(lines) + "\n")
        return path

    sites = []
    for k, rows in enumerate(np.array_split(rest, n)):
        slug = f"hospital-{k:02d}"
        path = write(folder / slug / "data.csv", np.sort(rows))
        sites.append(LocalSite(slug, path, file_sha256(path)))
    holdout_path = write(folder / "holdout.csv", np.sort(holdout))
    spec = LearningSpec(
        features=tuple(features),
        label=LABEL,
        classes=("0", "1"),
        # the ranges seen over the training files, as the portal sends them
        feature_ranges=tuple(
            (float(lo), float(hi))
            for lo, hi in zip(bunch.data[rest].min(0), bunch.data[rest].max(0), strict=True)
        ),
        task="classification",
        metric="roc_auc",
    )
    return sites, holdout_path, spec


def accuracy(params: list[np.ndarray], holdout: Path, spec: LearningSpec) -> float:
    metrics = evaluate_on_file(
        "logistic_regression",
        {"l2": 0.003},
        params,
        path=holdout,
        features=spec.features,
        label=spec.label,
        classes=spec.classes,
        feature_ranges=spec.feature_ranges,
    )
    return float(metrics["accuracy"])


def scenario(n: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        sites, holdout, spec = write_sites(Path(tmp), n)
        task = RoundTask(
            family="logistic_regression",
            family_options={"l2": 0.003},
            spec=spec,
            epochs=10,
            batch_size=32,
            learning_rate=0.5,
            proximal_mu=0.0,
            seed=42,
            round_number=0,
            site="",
        )
        plain = run_in_process(sites, task, rounds=rounds, strategy="fedavg")
        max_weight = max(len(s.path.read_text().splitlines()) - 1 for s in sites)
        timings: list[dict[str, float]] = []
        secure = run_secure_in_process(
            sites,
            task,
            rounds=rounds,
            strategy="fedavg",
            clip=CLIP,
            max_weight=float(max_weight),
            secure_timings=timings,
        )
        plain_accuracy = accuracy(plain[-1], holdout, spec)
        secure_accuracy = accuracy(secure[-1], holdout, spec)
        difference = max(
            float(np.max(np.abs(a - b))) for a, b in zip(plain[-1], secure[-1], strict=True)
        )
        dim = sum(int(p.size) for p in plain[-1])
    critical = [sum(t[f"{s}_max_site"] for s in STAGES) + t["coordinator"] for t in timings]
    everyone = [sum(t[f"{s}_all_sites"] for s in STAGES) + t["coordinator"] for t in timings]
    # the first round pays one-off imports and warm-up; the median is over every round
    return {
        "sites": n,
        "threshold": secagg.threshold(n),
        "dim": dim,
        "rounds": rounds,
        "clip": CLIP,
        "max_weight": max_weight,
        "extra_seconds_per_round_critical_path_median": statistics.median(critical),
        "extra_seconds_per_round_critical_path_max": max(critical),
        "extra_seconds_per_round_all_sites_median": statistics.median(everyone),
        "coordinator_seconds_median": statistics.median(t["coordinator"] for t in timings),
        "per_round": timings,
        "accuracy_plain": plain_accuracy,
        "accuracy_secure": secure_accuracy,
        "accuracy_cost": plain_accuracy - secure_accuracy,
        "max_parameter_difference_after_all_rounds": difference,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    results = [scenario(n, args.rounds) for n in (3, 10)]
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"secagg-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "bench": "secure aggregation",
                "when": stamp,
                "machine": {"python": platform.python_version(), "cpu": platform.processor()},
                "target_seconds_per_round_10_sites": TARGET_SECONDS_10,
                "scenarios": results,
            },
            indent=2,
        )
    )
    print("Secure aggregation (demo model, FedAvg, in one process):")
    for r in results:
        line = (
            f"  {r['sites']:>2} sites (t={r['threshold']}, {r['dim']} coordinates): extra "
            f"{1000 * r['extra_seconds_per_round_critical_path_median']:.1f} ms/round critical "
            f"path (max {1000 * r['extra_seconds_per_round_critical_path_max']:.1f}), "
            f"{1000 * r['extra_seconds_per_round_all_sites_median']:.1f} ms all sites in one "
            f"process; accuracy plain {r['accuracy_plain']:.4f}, secure "
            f"{r['accuracy_secure']:.4f}; largest parameter difference "
            f"{r['max_parameter_difference_after_all_rounds']:.2e}"
        )
        if r["sites"] == 10:
            met = r["extra_seconds_per_round_critical_path_median"] <= TARGET_SECONDS_10
            line += f"  [{'PASS' if met else 'MISS'} <= {1000 * TARGET_SECONDS_10:.0f} ms]"
        print(line)
    print(f"  written to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
