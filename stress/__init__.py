"""The stress suite: 1,199 concurrent tests against the seed's service graph (``python -m stress``)."""
