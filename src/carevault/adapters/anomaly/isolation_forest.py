"""The anomaly model behind the detector's rules: scikit-learn's isolation forest (Liu, Ting &
Zhou, ICDM 2008) on the features of `carevault.domain.anomaly.FEATURES`.

An isolation forest needs no labels, which the platform does not have: it is fitted on a recent
window of ordinary traffic and scores how easily a new access is isolated from it. Its score
is turned into 0..1 (``-score_samples`` is the forest's anomaly score, about 0.5 for ordinary
rows and towards 1 for isolated ones). Seeded, so that the same traffic gives the same scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.ensemble import IsolationForest


class IsolationForestModel:
    """`carevault.domain.anomaly.AnomalyModel` with scikit-learn."""

    def __init__(
        self, *, trees: int = 100, sample: int = 256, seed: int = 0, max_rows: int = 200_000
    ) -> None:
        self.trees = trees
        self.sample = sample
        self.seed = seed
        self.max_rows = max_rows
        self._forest: IsolationForest | None = None

    def fit(self, rows: Sequence[Sequence[float]]) -> None:
        data = np.asarray(rows, dtype=np.float64)
        if data.ndim != 2 or len(data) == 0:
            raise ValueError("the model is fitted on at least one row of features")
        if len(data) > self.max_rows:
            pick = np.random.default_rng(self.seed).choice(len(data), self.max_rows, replace=False)
            data = data[pick]
        forest = IsolationForest(
            n_estimators=self.trees,
            max_samples=min(self.sample, len(data)),
            random_state=self.seed,
        )
        forest.fit(data)
        self._forest = forest

    @property
    def fitted(self) -> bool:
        return self._forest is not None

    def score(self, rows: Sequence[Sequence[float]]) -> list[float]:
        if self._forest is None:
            return [0.0] * len(rows)
        if len(rows) == 0:
            return []
        data = np.asarray(rows, dtype=np.float64)
        scores = -self._forest.score_samples(data)
        return [float(value) for value in np.clip(scores, 0.0, 1.0)]
