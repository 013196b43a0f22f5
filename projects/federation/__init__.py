"""The learning engine: model families, aggregation strategies, safe parameter transport.

Plain Python with numpy and scikit-learn only. Nothing here imports Django, Celery or guardian
(an import-linter contract in ``pyproject.toml`` enforces it), reads settings or touches a
database: values go in and come out as typed dataclasses, numbers and ``list[np.ndarray]``, so
the same code runs in the coordinator, in a member's site worker and in the in-process loop
that tests and benchmarks use.

- ``families``: the models a site trains (logistic and linear regression, a small MLP);
- ``strategies``: how the coordinator combines the sites' parameters (FedAvg, FedProx, FedAdam,
  coordinate-wise median and trimmed mean);
- ``encoding``: arrays as ``.npy`` bytes, never pickles;
- ``validation``: what an update must satisfy before it touches the global model;
- ``data``: reading, encoding, scaling and splitting a site's CSV file;
- ``site``: one round of local training on a site's own file;
- ``loop``: the whole federation in one process, and the centrally trained baseline.
"""
