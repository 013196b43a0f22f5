"""`make bench`: the accuracy cost of record-level differential privacy on the demo problem.

The demo's breast-cancer rows dealt to its three hospitals as the demo deals them, trained with
the demo's settings (FedAvg, 10 rounds of 10 local epochs, batch 32, learning rate 0.5, L2
0.003) in one process (``run_in_process``: the sites' own code), once plain and once with DP-SGD
at each site for each epsilon, calibrated as a launch calibrates it (one noise multiplier that
keeps every hospital's dataset within the run's epsilon at delta 1e-5). Each model is scored on
the university's held-out file. DP runs are repeated over seeds (the noise differs per seed);
the figures are the mean and the spread.

Beside them, the same runs securely aggregated (``run_secure_in_process``: every site's keys,
shares and masks and the coordinator's unmasking, with the portal's clip and weighting): once
without DP, and for each epsilon and seed with DP-SGD at the sites before masking (a secure and
differentially private run, as the portal runs one). Given the same seed a secure run adds the
same noise as its DP-only twin, so the two models differ only by the secure sum's quantisation:
the largest parameter difference is reported with the accuracy. Per-round time is all three
sites one after the other in one process (plus, for secure runs, the four stages).

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

import numpy as np

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
SECAGG_CLIP = 100.0  # the portal's per-coordinate clip of a secure round (services/runs/secure.py)


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
    from projects.federation.loop import LocalSite, run_in_process, run_secure_in_process
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

        max_weight = float(max(rows.values()))
        finals: dict[tuple[bool, int, float | None], list] = {}

        def score(
            task: RoundTask, rounds: int, *, secure: bool = False
        ) -> tuple[dict[str, float], float]:
            started = time.perf_counter()
            if secure:
                history = run_secure_in_process(
                    sites,
                    task,
                    rounds=rounds,
                    strategy="fedavg",
                    clip=SECAGG_CLIP,
                    max_weight=max_weight,
                )
            else:
                history = run_in_process(sites, task, rounds=rounds, strategy="fedavg")
            elapsed = time.perf_counter() - started
            dp_epsilon = task.spec.dp.epsilon if task.spec.dp is not None else None
            finals[(secure, task.seed, dp_epsilon)] = history[-1]
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

        def difference(a: list, b: list) -> float:
            return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b, strict=True))

        plain, plain_round = score(base, args.rounds)
        print(
            f"plain:      accuracy {plain['accuracy']:.4f}  roc_auc {plain['roc_auc']:.4f}  "
            f"({plain_round * 1000:.0f} ms per round, three sites in one process)"
        )
        secure_only, secure_round = score(base, args.rounds, secure=True)
        secure_difference = difference(
            finals[(True, base.seed, None)], finals[(False, base.seed, None)]
        )
        print(
            f"secure:     accuracy {secure_only['accuracy']:.4f}  roc_auc "
            f"{secure_only['roc_auc']:.4f}  ({secure_round * 1000:.0f} ms per round; largest "
            f"parameter difference from plain {secure_difference:.1e})"
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
            runs, secure_runs = [], []
            for seed in range(args.seeds):
                task = dataclasses.replace(
                    base, seed=1000 + seed, spec=dataclasses.replace(spec, dp=dp)
                )
                metrics, per_round = score(task, args.rounds)
                runs.append({"seed": task.seed, **metrics, "seconds_per_round": per_round})
                metrics, per_round = score(task, args.rounds, secure=True)
                secure_runs.append(
                    {
                        "seed": task.seed,
                        **metrics,
                        "seconds_per_round": per_round,
                        "max_parameter_difference_from_dp_only": difference(
                            finals[(True, task.seed, epsilon)], finals[(False, task.seed, epsilon)]
                        ),
                    }
                )
            accuracy = [r["accuracy"] for r in runs]
            auc = [r["roc_auc"] for r in runs]
            secure_accuracy = [r["accuracy"] for r in secure_runs]
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
                    "secure": {
                        "runs": secure_runs,
                        "accuracy_mean": mean(secure_accuracy),
                        "accuracy_sd": pstdev(secure_accuracy),
                        "roc_auc_mean": mean(r["roc_auc"] for r in secure_runs),
                        "accuracy_cost": plain["accuracy"] - mean(secure_accuracy),
                        "seconds_per_round_mean": mean(r["seconds_per_round"] for r in secure_runs),
                        "max_parameter_difference_from_dp_only": max(
                            r["max_parameter_difference_from_dp_only"] for r in secure_runs
                        ),
                    },
                }
            )
            print(
                f"epsilon {epsilon:>4}: z {z:.3f}  accuracy {mean(accuracy):.4f} "
                f"± {pstdev(accuracy):.4f}  roc_auc {mean(auc):.4f}  cost "
                f"{plain['accuracy'] - mean(accuracy):+.4f}  "
                f"({mean(r['seconds_per_round'] for r in runs) * 1000:.0f} ms per round)"
            )
            secure = results[-1]["secure"]
            print(
                f"  + secure:   accuracy {secure['accuracy_mean']:.4f} "
                f"± {secure['accuracy_sd']:.4f}  roc_auc {secure['roc_auc_mean']:.4f}  cost "
                f"{secure['accuracy_cost']:+.4f}  "
                f"({secure['seconds_per_round_mean'] * 1000:.0f} ms per round; largest "
                f"parameter difference from DP only "
                f"{secure['max_parameter_difference_from_dp_only']:.1e})"
            )

    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"privacy-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "what": (
                    "holdout accuracy and time per round of the demo problem: plain, with "
                    "DP-SGD at the sites, securely aggregated, and both"
                ),
                "settings": {
                    **DEMO,
                    "rounds": args.rounds,
                    "clip_norm": CLIP_NORM,
                    "delta": 1e-5,
                    "accountant": "dp-accounting 0.6.0, RDP",
                    "sites": rows,
                    "seeds": args.seeds,
                    "secure_aggregation": {"clip": SECAGG_CLIP, "max_weight": max_weight},
                },
                "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                "load_average": os.getloadavg(),
                "plain": {**plain, "seconds_per_round": plain_round},
                "secure": {
                    **secure_only,
                    "seconds_per_round": secure_round,
                    "max_parameter_difference_from_plain": secure_difference,
                },
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
