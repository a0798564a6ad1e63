"""Grids of models trained together: cross-validation splits as fold codes
(:mod:`~dsoftmax.grid.folds`) and the loop that trains every model of a grid in one pass per step
(:mod:`~dsoftmax.grid.loop`)."""
