"""The training data of every model of a study, as nested designs (:mod:`dtl_dist.nn.nested`).

One design per training set of the paper's Fig. 2, with one outer split per fold of the n labelled samples
(the split trains without that fold's local samples and predicts them) and a final split on all n:

- ``local``: the n local samples (Local, DTL-R, local-PLS);
- ``library``: the library alone, one split predicting all n local samples (Global, Country, global-PLS);
- ``localised``: per split, the k library samples RS-LOCAL selected with that split's local samples, plus them
  (DTL-I, DTL-IR, RS-LOCAL-PLS);
- ``reference``: library plus the split's local samples, the library rows never validating (spiked-PLS, MBL).

Rows of ``X`` are the library rows a design uses followed by the n local samples.
"""

from __future__ import annotations

import numpy as np

from dtl_dist.nn.nested import Design, OuterSplit
from dtl_dist.study.data import Source, StudyData


def local_design(data: StudyData) -> Design:
    """The n local samples; split ``s`` trains on the other outer folds with inner folds among them."""
    splits = []
    for s in range(data.n_splits):
        train, held_out = data.local_split(s)
        splits.append(OuterSplit(train, data.inner(train.size, s), held_out))
    return Design(data.local_X, data.local_y, tuple(splits))


def library_design(data: StudyData, source: Source) -> Design:
    """The library alone (no local sample trains it): one split, inner folds over the library (its in-memory
    rows), predicting every labelled local sample (their predictions are the model's cross-validation
    estimates)."""
    rows = source.training_rows()
    L = rows.size
    split = OuterSplit(np.arange(L), data.inner(L, data.n_outer), L + np.arange(data.local_y.size))
    return Design(np.vstack([source.spectra(rows), data.local_X]), np.concatenate([source.y[rows], data.local_y]),
                  (split,))


def localised_design(data: StudyData, source: Source, selected: list[np.ndarray]) -> Design:
    """Per split ``s``, the library rows ``selected[s]`` (RS-LOCAL with that split's local samples) plus the
    split's local samples (the k + n localised data), inner folds over all of them as in the paper."""
    used = np.unique(np.concatenate(selected))
    position = {row: i for i, row in enumerate(used)}
    offset = used.size
    splits = []
    for s, rows in enumerate(selected):
        train_local, held_out = data.local_split(s)
        train = np.concatenate([[position[r] for r in rows], offset + train_local]).astype(np.int64)
        splits.append(OuterSplit(train, data.inner(train.size, s), offset + held_out))
    return Design(np.vstack([source.spectra(used), data.local_X]), np.concatenate([source.y[used], data.local_y]),
                  tuple(splits))


def reference_design(data: StudyData, source: Source, copies: int = 1) -> Design:
    """The library (its in-memory rows) plus ``copies`` of each of the split's local samples (spiking by extra
    weight); library rows always train (inner fold -1) and the local samples carry their inner fold in every
    copy."""
    rows = source.training_rows()
    L = rows.size
    splits = []
    for s in range(data.n_splits):
        train_local, held_out = data.local_split(s)
        inner_local = data.inner(train_local.size, s)
        train = np.concatenate([np.arange(L), np.tile(L + train_local, copies)])
        inner = np.concatenate([np.full(L, -1), np.tile(inner_local, copies)])
        splits.append(OuterSplit(train, inner, L + held_out))
    return Design(np.vstack([source.spectra(rows), data.local_X]), np.concatenate([source.y[rows], data.local_y]),
                  tuple(splits))


def assemble(data: StudyData, design: Design, predictions: list) -> np.ndarray:
    """Out-of-fold predictions of the n labelled samples from each outer split's predictions of its held-out
    rows (a library-only design: its single split's predictions of all n)."""
    n = data.local_y.size
    out = np.full(n, np.nan)
    offset = design.y.size - n
    for split, values in zip(design.splits, predictions):
        if values is not None and split.predict.size:
            out[split.predict - offset] = values
    return out
