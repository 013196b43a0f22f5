"""The whole federation in one process, and the centrally trained baseline it is measured against.

``run_in_process`` performs exactly the computation of a distributed run: the same initial
parameters, the same per-site tasks and seeds, the sites in sorted order, every parameter list
passed through ``encode_params``/``decode_params`` as the transport does, sample counts as
weights. Its results are therefore bit-identical to what the coordinator and the site workers
produce, which is what the benchmark and the tests rely on.

``train_central`` is the counterfactual the alliance exists to avoid: the same family trained
on the pooled training rows of every site (each site's split being the one it uses in a run).
"Federated within two points of central" is the usual check that federation costs little.
"""

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from projects.federation.data import split
from projects.federation.encoding import decode_params, encode_params
from projects.federation.families import get_family
from projects.federation.site import (
    RoundTask,
    family_for,
    n_outputs_for,
    read_site_file,
    site_rng,
    train_on_site,
)
from projects.federation.strategies import aggregate, get_strategy
from projects.federation.strategies import strategy_options as checked_options

Params = list[np.ndarray]

COORDINATOR = "coordinator"


@dataclass(frozen=True)
class LocalSite:
    """A site in the in-process loop: its slug, its data file and the file's registered hash."""

    site: str
    path: Path
    sha256: str


def initial_params(
    family: str,
    family_options: Mapping[str, Any] | None,
    n_features: int,
    n_outputs: int,
    seed: int,
) -> Params:
    """The run's round-0 model, drawn from the coordinator's own seeded stream."""
    return get_family(family, dict(family_options or {})).init(
        n_features, n_outputs, site_rng(seed, COORDINATOR, "init")
    )


def _transported(params: Params) -> Params:
    return decode_params(encode_params(params), max_arrays=max(len(params), 64))


def run_in_process(
    sites: Sequence[LocalSite],
    base_task: RoundTask,
    *,
    rounds: int,
    strategy: str,
    strategy_options: Mapping[str, Any] | None = None,
) -> list[Params]:
    """The global parameters after each of rounds 1..``rounds``.

    ``base_task``'s ``site`` and ``round_number`` are replaced per site and round; its
    ``proximal_mu`` is replaced by the strategy's ``mu`` when the strategy has one
    (FedProx), and by 0 otherwise, as the coordinator does.
    """
    options = checked_options(strategy, strategy_options)
    proximal_mu = options["mu"] if "mu" in get_strategy(strategy).client_options else 0.0
    family = family_for(base_task.family, base_task.family_options)
    global_params = _transported(
        initial_params(
            base_task.family,
            base_task.family_options,
            len(base_task.features),
            n_outputs_for(family, base_task.classes),
            base_task.seed,
        )
    )
    state: list[np.ndarray] | None = None
    history: list[Params] = []
    for round_number in range(1, rounds + 1):
        blob = encode_params(global_params)
        results: list[tuple[Params, float]] = []
        for local in sorted(sites, key=lambda s: s.site):
            task = dataclasses.replace(
                base_task, site=local.site, round_number=round_number, proximal_mu=proximal_mu
            )
            result = train_on_site(
                task, decode_params(blob), data_path=local.path, expected_sha256=local.sha256
            )
            results.append((_transported(result.params), float(result.sample_count)))
        new_params, state = aggregate(strategy, global_params, results, state, options)
        global_params = _transported(new_params)
        history.append([p.copy() for p in global_params])
    return history


def train_central(
    paths: Sequence[Path | LocalSite], base_task: RoundTask, *, epochs: int
) -> Params:
    """The family trained for ``epochs`` on the pooled training rows of every site.

    Each site's training rows are those of its own seeded split, which depends on the site's
    slug: pass ``LocalSite`` values, or paths laid out as ``<sites>/<slug>/<file>`` (the slug is
    then the parent directory's name). Rows are pooled in sorted slug order; the shuffles come
    from the stream ``("central", "train")`` of the run's seed.
    """
    family = family_for(base_task.family, base_task.family_options)
    n_outputs = n_outputs_for(family, base_task.classes)
    named = sorted(
        (item.site, item.path) if isinstance(item, LocalSite) else (Path(item).parent.name, item)
        for item in paths
    )
    features: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    for slug, path in named:
        X, y = read_site_file(
            Path(path),
            features=base_task.features,
            label=base_task.label,
            classes=base_task.classes,
            feature_ranges=base_task.feature_ranges,
            scaling=base_task.spec.scaling,
            feature_stats=base_task.spec.feature_stats,
        )
        train_rows, _ = split(
            len(X), base_task.validation_share, site_rng(base_task.seed, slug, "split")
        )
        features.append(X[train_rows])
        targets.append(y[train_rows])
    start = initial_params(
        base_task.family,
        base_task.family_options,
        len(base_task.features),
        n_outputs,
        base_task.seed,
    )
    return family.train(
        start,
        np.concatenate(features),
        np.concatenate(targets),
        epochs=epochs,
        batch_size=base_task.batch_size,
        learning_rate=base_task.learning_rate,
        rng=site_rng(base_task.seed, "central", "train"),
    )
