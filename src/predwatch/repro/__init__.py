"""Reproducibility: the card stored with each evaluation point (``card``) and re-generating one
recorded answer from a checkpoint (``regenerate``)."""
