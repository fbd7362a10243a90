"""What a registration returns (:class:`RegistrationResult`), whichever method made it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# --------------------------------------------------------------------------- result
#: How the metric values are reported (ITK's sign convention).
METRIC_NOTE = "mutual information (nats) of a joint intensity histogram on fixed-image sample points; higher is better"


@dataclass
class RegistrationResult:
    """The outcome of :func:`register` or :func:`register_landmarks`.

    Attributes
    ----------
    fixed_to_moving : (4, 4) array
        World RAS mm: a fixed world point -> the moving world point of the same anatomy.
    metric_initial : float
        Metric with the images as they were (identity); NaN if they did not overlap.
        For landmarks: the RMS distance of the pairs before registration (mm).
    metric_final : float
        Metric after registration (for landmarks: RMS fiducial registration error, mm).
    iterations : int
        Optimiser iterations over all stages.
    parameters : dict
        Every setting used (JSON-ready), for provenance.
    stages : list of dict
        One entry per stage/level: name, iterations, metric, stop condition, seconds.
    elapsed_s : float
        Wall time of the registration.
    method : str
        "intensity" or "landmarks".
    warnings : list of str
        Doubtful points the user must see (also issued as ImmunotrackWarning).
    metric_after_init : float
        Metric after the geometric initialisation (intensity method).
    fre_mm : array, optional
        Landmarks: fiducial registration error of each pair (mm).
    """

    fixed_to_moving: np.ndarray
    metric_initial: float
    metric_final: float
    iterations: int
    parameters: dict
    stages: list = field(default_factory=list)
    elapsed_s: float = 0.0
    method: str = "intensity"
    warnings: list = field(default_factory=list)
    metric_after_init: float = float("nan")
    fre_mm: np.ndarray | None = None

    @property
    def moving_to_fixed(self) -> np.ndarray:
        """Inverse map: a moving world point -> the fixed world point of the same anatomy."""
        return np.linalg.inv(self.fixed_to_moving)

    def apply_to_affine(self, moving_affine) -> np.ndarray:
        """The moving image's new index->world affine that shows it in the fixed world, unresampled.

        ``inv(fixed_to_moving) @ moving_affine``: a moving voxel at moving world
        point ``p`` belongs at fixed world point ``inv(T) @ p``.

        Parameters
        ----------
        moving_affine : (4, 4) array
            The moving image's index -> moving world RAS mm.

        Returns
        -------
        (4, 4) ndarray
            Index -> fixed world RAS mm.

        Examples
        --------
        >>> shift = np.eye(4); shift[0, 3] = 2.0                 # the moving world is 2 mm to the right
        >>> result = RegistrationResult(shift, metric_initial=0.2, metric_final=0.9, iterations=12, parameters={})
        >>> result.apply_to_affine(np.eye(4))[:3, 3]
        array([-2.,  0.,  0.])
        """
        return self.moving_to_fixed @ np.asarray(moving_affine, float)

    def transform_points(self, fixed_points) -> np.ndarray:
        """Fixed world RAS points (N, 3) -> moving world RAS points (N, 3).

        Parameters
        ----------
        fixed_points : array_like, shape (3,) or (N, 3)
            Fixed world points, RAS mm.

        Returns
        -------
        ndarray, shape (N, 3)
            The same anatomy in the moving world, RAS mm.

        Examples
        --------
        >>> shift = np.eye(4); shift[0, 3] = 2.0                 # the moving world is 2 mm to the right
        >>> result = RegistrationResult(shift, metric_initial=0.2, metric_final=0.9, iterations=12, parameters={})
        >>> result.transform_points([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
        array([[2., 0., 0.],
               [3., 1., 1.]])
        """
        pts = np.atleast_2d(np.asarray(fixed_points, float))
        return pts @ self.fixed_to_moving[:3, :3].T + self.fixed_to_moving[:3, 3]

    def to_dict(self) -> dict:
        """A JSON-ready record for provenance files.

        Returns
        -------
        dict
            method, ``fixed_to_moving_ras`` (rounded to 1e-9), its direction in words, the metric values
            (None for NaN) and what the metric is, iterations, elapsed seconds, parameters, stages,
            warnings and, for landmarks, ``fre_mm``.

        Examples
        --------
        >>> shift = np.eye(4); shift[0, 3] = 2.0                 # the moving world is 2 mm to the right
        >>> result = RegistrationResult(shift, metric_initial=0.2, metric_final=0.9, iterations=12, parameters={})
        >>> record = result.to_dict()
        >>> record["fixed_to_moving_ras"][0], record["metric_after_init"], record["direction"]
        ([1.0, 0.0, 0.0, 2.0], None, 'fixed world point (RAS mm) -> moving world point (RAS mm)')
        """
        out = {
            "method": self.method,
            "fixed_to_moving_ras": np.round(self.fixed_to_moving, 9).tolist(),
            "direction": "fixed world point (RAS mm) -> moving world point (RAS mm)",
            "metric_initial": plain_number(self.metric_initial),
            "metric_after_init": plain_number(self.metric_after_init),
            "metric_final": plain_number(self.metric_final),
            "metric": METRIC_NOTE if self.method == "intensity" else "RMS distance of landmark pairs (mm)",
            "iterations": int(self.iterations),
            "elapsed_s": round(float(self.elapsed_s), 3),
            "parameters": self.parameters,
            "stages": self.stages,
            "warnings": list(self.warnings),
        }
        if self.fre_mm is not None:
            out["fre_mm"] = np.round(np.asarray(self.fre_mm), 4).tolist()
        return out


def plain_number(value):
    """A float rounded to 6 decimals for reports, or None for NaN/inf.

    Parameters
    ----------
    value : float or number-like
        E.g. a metric value, mm or nats.

    Returns
    -------
    float or None
        JSON-safe: None where JSON has no number.

    Examples
    --------
    >>> plain_number(np.float32(0.1234567891)), plain_number(float("nan")), plain_number(3)
    (0.123457, None, 3.0)
    """
    value = float(value)
    return None if not np.isfinite(value) else round(value, 6)
