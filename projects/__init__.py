"""Problems, datasets, data-use agreements, federated runs and the model registry."""
