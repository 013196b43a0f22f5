"""`make bench`: the accuracy cost of record-level differential privacy on the demo problem.

The demo's breast-cancer rows dealt to its three hospitals as the demo deals them, trained with
the demo's settings (FedAvg, 10 rounds of 10 local epochs, batch 32, learning rate 0.5, L2
0.003) in one process (``run_in_process``: the sites' own code), once plain and once with DP-SGD
at each site for each epsilon, calibrated as a launch calibrates it (one noise multiplier that
keeps every hospital's dataset within the run's epsilon at delta 1e-5). Each model is scored on
the university's held-out file. DP runs are repeated over seeds (the noise differs per seed);
the figures are the mean and the spread.

Output: a summary and ``bench/results/privacy-<UTC timestamp>.json``.
"""

import argparse
import dataclasses
import datetime
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from statistics import mean, pstdev

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
RESULTS = ROOT / "bench" / "results"

EPSILONS = (1.0, 3.0, 8.0)
DEMO = {
    "family": "logistic_regression",
    "family_options": {"l2": 0.003},
    "epochs": 10,
    "batch_size": 32,
    "learning_rate": 0.5,
}
ROUNDS = 10
CLIP_NORM = 1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="DP runs per epsilon")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()

    import django

    django.setup()
    logging.getLogger("absl").setLevel(logging.ERROR)
    from projects.demo import HOSPITAL_SHARES, LABEL, UNIVERSITY, write_breast_cancer_files
    from projects.federation import privacy
    from projects.federation.data import file_sha256, load_csv
    from projects.federation.loop import LocalSite, run_in_process
    from projects.federation.protocol import VALIDATION_SHARE, DpSpec, LearningSpec, RoundTask
    from projects.federation.site import evaluate_on_file

    with tempfile.TemporaryDirectory(prefix="bench-privacy-") as tmp:
        data = write_breast_cancer_files(Path(tmp))
        sites = [
            LocalSite(site=slug, path=data.files[slug], sha256=file_sha256(data.files[slug]))
            for slug in HOSPITAL_SHARES
        ]
        rows = {s.site: len(load_csv(s.path, features=data.features, label=None)[0]) for s in sites}
        spec = LearningSpec(
            features=tuple(data.features),
            label=LABEL,
            classes=("0", "1"),
            feature_ranges=tuple((0.0, data.bounds[f]) for f in data.features),
            task="classification",
        )
        base = RoundTask(**DEMO, spec=spec, proximal_mu=0.0, seed=42, round_number=0, site="")

        def score(task: RoundTask, rounds: int) -> tuple[dict[str, float], float]:
            started = time.perf_counter()
            history = run_in_process(sites, task, rounds=rounds, strategy="fedavg")
            elapsed = time.perf_counter() - started
            metrics = evaluate_on_file(
                task.family,
                task.family_options,
                history[-1],
                path=data.files[UNIVERSITY],
                features=task.features,
                label=LABEL,
                classes=["0", "1"],
                feature_ranges=task.feature_ranges,
            )
            return metrics, elapsed / rounds

        plain, plain_round = score(base, args.rounds)
        print(
            f"plain:      accuracy {plain['accuracy']:.4f}  roc_auc {plain['roc_auc']:.4f}  "
            f"({plain_round * 1000:.0f} ms per round, three sites in one process)"
        )
        results = []
        for epsilon in EPSILONS:
            z = max(
                privacy.noise_for(
                    target_epsilon=epsilon,
                    rows=privacy.training_rows(n, VALIDATION_SHARE),
                    batch_size=DEMO["batch_size"],
                    epochs=DEMO["epochs"],
                    rounds=args.rounds,
                    delta=privacy.DELTA,
                )
                for n in rows.values()
            )
            dp = DpSpec(
                noise_multiplier=z, clip_norm=CLIP_NORM, epsilon=epsilon, delta=privacy.DELTA
            )
            spent = {
                slug: privacy.epsilon(
                    [
                        (
                            privacy.round_event(
                                rows=privacy.training_rows(n, VALIDATION_SHARE),
                                batch_size=DEMO["batch_size"],
                                epochs=DEMO["epochs"],
                                noise_multiplier=z,
                            ),
                            args.rounds,
                        )
                    ]
                )
                for slug, n in rows.items()
            }
            runs = []
            for seed in range(args.seeds):
                task = dataclasses.replace(
                    base, seed=1000 + seed, spec=dataclasses.replace(spec, dp=dp)
                )
                metrics, per_round = score(task, args.rounds)
                runs.append({"seed": task.seed, **metrics, "seconds_per_round": per_round})
            accuracy = [r["accuracy"] for r in runs]
            auc = [r["roc_auc"] for r in runs]
            results.append(
                {
                    "epsilon": epsilon,
                    "noise_multiplier": z,
                    "epsilon_spent_per_dataset": spent,
                    "runs": runs,
                    "accuracy_mean": mean(accuracy),
                    "accuracy_sd": pstdev(accuracy),
                    "roc_auc_mean": mean(auc),
                    "accuracy_cost": plain["accuracy"] - mean(accuracy),
                    "seconds_per_round_mean": mean(r["seconds_per_round"] for r in runs),
                }
            )
            print(
                f"epsilon {epsilon:>4}: z {z:.3f}  accuracy {mean(accuracy):.4f} "
                f"± {pstdev(accuracy):.4f}  roc_auc {mean(auc):.4f}  cost "
                f"{plain['accuracy'] - mean(accuracy):+.4f}  "
                f"({mean(r['seconds_per_round'] for r in runs) * 1000:.0f} ms per round)"
            )

    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"privacy-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "what": "holdout accuracy of the demo problem, plain and with DP-SGD at the sites",
                "settings": {
                    **DEMO,
                    "rounds": args.rounds,
                    "clip_norm": CLIP_NORM,
                    "delta": 1e-5,
                    "accountant": "dp-accounting 0.6.0, RDP",
                    "sites": rows,
                    "seeds": args.seeds,
                },
                "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                "load_average": os.getloadavg(),
                "plain": {**plain, "seconds_per_round": plain_round},
                "dp": results,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    print(f"written {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
