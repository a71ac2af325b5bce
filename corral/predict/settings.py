"""How the usage model is trained: settings light enough to import without numpy or LightGBM.

`corral.predict.model` re-exports `TrainSettings`; the CLI reads its defaults from here so that
`corral --help` does not load the model's libraries.
"""

from __future__ import annotations

from dataclasses import dataclass

from corral.errors import InputError


@dataclass(frozen=True)
class TrainSettings:
    """How to train. Row limits keep training to about a minute on 2 shared cores."""

    quantile: float = 0.95
    """Quantile predicted; 0.95 is the P95 titus-isolate used."""
    horizon_s: float = 600.0
    """Horizon of the predicted quantile (s)."""
    rounds: int = 400
    learning_rate: float = 0.1
    num_leaves: int = 63
    min_data_in_leaf: int = 50
    max_train_rows: int = 200_000
    """Training anchors are subsampled (uniformly, seeded) above this many."""
    max_calibration_rows: int = 100_000
    calibration_share: float = 0.15
    """Share of the training period, at its end, held out to calibrate coverage."""
    min_history_s: float = 3600.0
    """Anchors (and live workloads) need this much history; with less, use the request."""
    seed: int = 0
    threads: int = 2
    base_feature: str = "max_1800s"
    """The trees learn the target minus this feature (share of capacity), not the target:
    trees approximate a near-identity badly with steps, a residual well. Chosen on a
    validation split inside the training period (days 17-22 of the Bitbrains month, after
    training on days 0-17): max of the last 30 min beat none, the last value, the hour's
    max or P95 and the 3-hour max. Empty: no base."""

    def __post_init__(self) -> None:
        if not 0.0 < self.quantile < 1.0:
            raise InputError("--quantile", f"must be between 0 and 1, got {self.quantile:g}")
        if not 0.0 <= self.calibration_share < 0.5:
            raise InputError(
                "calibration_share", f"must be in [0, 0.5), got {self.calibration_share:g}"
            )
        if self.max_train_rows < 100:
            raise InputError("--max-train-rows", "must be at least 100")
