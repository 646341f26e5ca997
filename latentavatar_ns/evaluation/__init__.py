"""Scores of a trained avatar: image metrics and the held-out evaluation (``metrics``), and how much of each
frame's expression its code carries, per face region (``expressiveness``)."""
