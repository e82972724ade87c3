"""The 1D-CNN of the paper as a scikit-learn regressor, for pipelines and ``cross_val_score`` (section 2.3.1).

``fit`` runs the same search a study runs for one training set (:func:`dtl_dist.nn.search.tune` with a
:class:`~dtl_dist.nn.search.CandidateRunner`: the known-good small CNNs first, then seeded draws from the search
space), every candidate trained on k folds with early stopping and the study's input and SOC standard scaling
(the scaling buffers of :class:`~dtl_dist.nn.builder.CNN`); the candidate with the lowest k-fold RMSE is kept,
and its k fold models predict as one ensemble (their mean). Given an ``architecture`` (a flat trial dict, as in
a search's ``trials.csv`` ``params`` or :data:`~dtl_dist.nn.space.SMALL_DATA_STARTERS`), only that one is trained.

Why not skorch: skorch 1.4.0 installs offline here, but a ``NeuralNetRegressor`` around this package's CNN
failed 25 of 52 ``check_estimator`` checks as configured (measured 2026-12-06: it sets attributes in
``__init__``, mutates its ``callbacks`` parameter, sets no ``n_features_in_``, accepts NaN/inf and empty data);
its early stopping watches one random 20 % validation split, not the k folds whose models form the study's
ensemble; it has no target scaling or architecture search. Wrapping the trainer, search and model directory
this package already has is less code and gives the same models a study gives.
"""

from __future__ import annotations

import tempfile

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from dtl_dist.nn.model_dir import load_model
from dtl_dist.nn.search import CandidateRunner, TuneData, tune
from dtl_dist.nn.space import SMALL_DATA_STARTERS, default_space
from dtl_dist.nn.trainer import FoldEnsemble


class CNNRegressor(RegressorMixin, BaseEstimator):
    """A 1D-CNN found by the study's search (or a given architecture), trained on k folds with early stopping.

    Parameters
    ----------
    architecture : dict or None, default=None
        A flat trial dict of the search space (``conv0_filters``, ``fc0_nodes``, ``lr``, ``batch_size``,
        ``max_epochs``, ``patience`` ...): train this one. None: search ``trials`` candidates.
    trials : int, default=4
        Candidates of the search: the :data:`~dtl_dist.nn.space.SMALL_DATA_STARTERS` first, then seeded draws
        from :func:`~dtl_dist.nn.space.default_space` (the paper evaluates hundreds: ``dtl tune``).
    folds : int, default=10
        Train-validation folds (at most the number of samples): each fold model stops early on its fold.
    max_epochs : int or None, default=None
        Cap on every candidate's epochs and patience (None: each candidate's own).
    random_state : int, default=0
        Seed of the folds, the draws and the weights: the same seed gives the same model.
    mode : {"auto", "vectorised", "sequential"}, default="auto"
        How the fold models are trained (same models, see :mod:`dtl_dist.nn.trainer`).

    Attributes
    ----------
    params_ : dict, the chosen candidate's flat trial dict.
    cv_rmse_ : float, its mean validation RMSE over the folds.
    cnn_config_ : dict, its architecture (:meth:`CNNConfig.to_dict`).
    fold_states_ : list of dict, the fold models' weights (their mean prediction is :meth:`predict`).
    search_ : pandas.DataFrame, every candidate's outcome (the search's ``trials.csv``).
    n_features_in_ : int

    References
    ----------
    Shen et al. (2022), section 2.3.1; Shen and Viscarra Rossel (2021), automated 1D-CNN modelling.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline                      # doctest: +SKIP
    >>> from dtl_dist import CNNRegressor, SNV                          # doctest: +SKIP
    >>> model = make_pipeline(SNV(), CNNRegressor(trials=4)).fit(X, soc)  # doctest: +SKIP
    """

    def __init__(self, architecture=None, *, trials=4, folds=10, max_epochs=None, random_state=0, mode="auto"):
        self.architecture = architecture
        self.trials = trials
        self.folds = folds
        self.max_epochs = max_epochs
        self.random_state = random_state
        self.mode = mode

    def fit(self, X, y):
        """Search (or train the given architecture) on spectra ``X`` (n_samples, n_bands) and SOC ``y``."""
        X, y = validate_data(self, X, y, dtype=np.float32, y_numeric=True, ensure_min_samples=2)
        if not isinstance(self.folds, (int, np.integer)) or self.folds < 2:
            raise ValueError(f"CNNRegressor folds={self.folds!r}: expected an integer >= 2")
        seed = 0 if self.random_state is None else int(self.random_state)
        data = TuneData.make(X, y, folds=min(int(self.folds), len(y)), seed=seed, preprocessing=())
        space = default_space()
        given = self.architecture is not None
        starters = [dict(self.architecture)] if given else list(SMALL_DATA_STARTERS)
        problems = space.validate(starters[0], X.shape[1]) if given else []
        if problems:
            raise ValueError(f"CNNRegressor architecture: not a trial of the search space that runs on {X.shape[1]} "
                             f"feature(s): {'; '.join(problems)}")
        with tempfile.TemporaryDirectory(prefix="dtl-cnn-") as storage:
            runner = CandidateRunner(storage, starters=starters)
            result = tune(data, space, trials=1 if given else int(self.trials), runner=runner, seed=seed,
                          max_epochs=self.max_epochs, mode=self.mode)
            best = result.best
            if best is None:
                raise ValueError(f"CNNRegressor: no candidate trained on {X.shape[1]} feature(s); "
                                 f"{result.table()[['trial_id', 'status', 'reason']].to_dict('records')}")
            model = load_model(result.best_model_dir())
        self.params_, self.cv_rmse_ = dict(best.params), float(best.rmse)
        self.cnn_config_ = model.cnn_config.to_dict()
        self.fold_states_ = [m.state_dict() for m in model.fold_models]
        self.search_ = result.table()
        return self

    def predict(self, X):
        """Mean prediction of the fold models for spectra ``X`` (n_samples, n_bands)."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, reset=False)
        from dtl_dist.nn.builder import CNNConfig

        ensemble = FoldEnsemble.from_states(CNNConfig.from_dict(self.cnn_config_), X.shape[1], self.fold_states_)
        return ensemble.predict(np.ascontiguousarray(X)).astype(np.float64)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.regressor_tags.poor_score = True  # a few epochs on sklearn's small check data: no accuracy promise
        return tags
