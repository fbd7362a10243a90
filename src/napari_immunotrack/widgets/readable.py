"""Readouts a reader can take in at a glance (no Qt): organ names instead of label numbers, units in
every column header, the PET nuclide named, 19F in mM once a reference tube calibrates it.

Used by the Quantitative readouts dock (:mod:`.readout`) and the Cursor readout; tested without Qt.
"""

from __future__ import annotations

import math
import re

import numpy as np

#: Avogadro's number (1/mol).
AVOGADRO = 6.02214076e23

#: How close a header half-life must be to a nuclide's to name it (relative).
HALF_LIFE_TOLERANCE = 0.02


def nuclide_symbol(key: str | None) -> str | None:
    """A nuclide key of the PET header reader ("ZR89", "TC99M") as written in papers ("89Zr", "99mTc").

    Parameters
    ----------
    key : str or None
        Element then mass number, optionally ``M`` for metastable, any case.

    Returns
    -------
    str or None
        Mass number, ``m`` if metastable, element ("99mTc"); the key unchanged when it is not of that
        form; None for None or "".

    Examples
    --------
    >>> nuclide_symbol("ZR89"), nuclide_symbol("TC99M"), nuclide_symbol("F18")
    ('89Zr', '99mTc', '18F')
    """
    if not key:
        return None
    m = re.fullmatch(r"([A-Z]{1,2})(\d+)(M?)", str(key).upper())
    if not m:
        return str(key)
    element, mass, meta = m.groups()
    return f"{mass}{'m' if meta else ''}{element.capitalize()}"


def nuclide_from_half_life(half_life_s: float | None, tolerance: float = HALF_LIFE_TOLERANCE) -> str | None:
    """The nuclide key whose half-life is within ``tolerance`` of ``half_life_s`` (None: none or ambiguous).

    Parameters
    ----------
    half_life_s : float or None
        Half-life from the header, seconds.
    tolerance : float, default 0.02
        Largest relative difference from a tabulated half-life
        (:data:`~napari_immunotrack.analysis.pet_header.HALF_LIVES_S`).

    Returns
    -------
    str or None
        The nuclide key ("ZR89"); None when no nuclide or more than one fits, or the half-life is
        missing, zero or not finite.

    Examples
    --------
    >>> nuclide_from_half_life(282240.0), nuclide_from_half_life(6586.2), nuclide_from_half_life(1000.0)
    ('ZR89', 'F18', None)
    """
    from ..analysis.pet_header import HALF_LIVES_S

    if not half_life_s or not math.isfinite(float(half_life_s)):
        return None
    fits = [k for k, t in HALF_LIVES_S.items() if abs(float(half_life_s) - t) / t <= tolerance]
    return fits[0] if len(fits) == 1 else None


def nuclide_text(radionuclide: str | None, half_life_s: float | None, source: str | None = None) -> str:
    """ "nuclide 89Zr (RadionuclideCodeSequence)", "nuclide 89Zr (from the half-life, 78.4 h)" or
    "nuclide not named, T1/2 1000 s".

    Parameters
    ----------
    radionuclide : str or None
        The header's nuclide key ("ZR89"), if it names one.
    half_life_s : float or None
        The header's half-life, seconds.
    source : str, optional
        Where the nuclide was read (shown in brackets).

    Returns
    -------
    str
        One line for the dock: the named nuclide (with its half-life in hours when known), the nuclide
        guessed from the half-life (:func:`nuclide_from_half_life`), the half-life alone, or "nuclide and
        half-life unknown".

    Examples
    --------
    >>> nuclide_text(None, 282240.0)
    'nuclide 89Zr (from the half-life, 78.4 h)'
    >>> nuclide_text("F18", 6586.2, "RadionuclideCodeSequence")
    'nuclide 18F (RadionuclideCodeSequence), T1/2 1.83 h'
    >>> nuclide_text(None, 1000.0), nuclide_text(None, None)
    ('nuclide not named, T1/2 1000 s', 'nuclide and half-life unknown')
    """
    hours = f"{half_life_s / 3600:.3g} h" if half_life_s else None
    if radionuclide:
        text = f"nuclide {nuclide_symbol(radionuclide)}" + (f" ({source})" if source else "")
        return text + (f", T1/2 {hours}" if hours else "")
    guessed = nuclide_from_half_life(half_life_s)
    if guessed:
        return f"nuclide {nuclide_symbol(guessed)} (from the half-life, {hours})"
    return f"nuclide not named, T1/2 {half_life_s:g} s" if half_life_s else "nuclide and half-life unknown"


# ============================================================================ column headers with units
_UNIT_OF_SLUG = {
    "bq_ml": "Bq/mL",
    "kbq": "kBq",
    "mbq": "MBq",
    "au": "a.u.",
    "mm": "mM",
    "ml": "mL",
    "ng_fe": "ng Fe",
    "ug_fe": "µg Fe",
    "ms": "ms",
}

_FIXED_HEADERS = {
    "name": "organ",
    "label": "label",
    "layer": "layer",
    "unit": "unit",
    "voxels": "voxels",
    "volume_ml": "volume (mL)",
    "percent_id": "%ID",
    "percent_id_per_ml": "%ID/mL",
    "percent_id_per_g": "%ID/g",
    "density_g_ml": "density (g/mL)",
    "fraction_in_fov": "fraction in FOV",
    "total_activity_kbq": "total activity (kBq)",
    "total_activity_mbq": "total activity (MBq)",
    "fluorine_atoms": "19F atoms",
    "cell_count": "cells",
    "status": "status",
    "peak_method": "peak method",
}


def column_header(column: str) -> str:
    """A table column as a header with its unit: "mean_bq_ml" -> "mean (Bq/mL)", "suv_bw_mean" -> "SUVbw mean".

    Parameters
    ----------
    column : str
        A machine-readable readout column (``<statistic>_<unit slug>``, ``suv_<kind>_<statistic>``,
        ``integral_<unit>_ml``, optionally ending in ``_<n>ul`` for a peak volume or ``_pvc``).

    Returns
    -------
    str
        The header: fixed names for the known columns (``name`` -> "organ"), "PVC" appended to a corrected
        column, else the column with spaces for underscores.

    Examples
    --------
    >>> column_header("mean_bq_ml"), column_header("suv_bw_peak_14ul"), column_header("integral_au_ml")
    ('mean (Bq/mL)', 'SUVbw peak 14 µL', 'integral (a.u.·mL)')
    >>> column_header("mean_mm"), column_header("percent_id_per_g"), column_header("mean_bq_ml_pvc")
    ('mean (mM)', '%ID/g', 'mean (Bq/mL) PVC')
    """
    if column in _FIXED_HEADERS:
        return _FIXED_HEADERS[column]
    m = re.fullmatch(r"suv_([a-z]+)_([a-z]+)(?:_(\d+)ul)?(_pvc)?", column)
    if m:
        kind, stat, peak_ul, pvc = m.groups()
        text = f"SUV{kind} {stat}" + (f" {peak_ul} µL" if peak_ul else "")
        return text + (" PVC" if pvc else "")
    pvc = column.endswith("_pvc")
    base = column[:-4] if pvc else column
    m = re.fullmatch(r"(integral)_(.+)_ml", base)
    if m and m.group(2) in _UNIT_OF_SLUG:
        text = f"integral ({_UNIT_OF_SLUG[m.group(2)]}·mL)"
        return text + (" PVC" if pvc else "")
    for slug, unit in sorted(_UNIT_OF_SLUG.items(), key=lambda kv: -len(kv[0])):
        m = re.fullmatch(rf"([a-z]+)_{slug}(?:_(\d+)ul)?", base)
        if m:
            stat, peak_ul = m.groups()
            text = f"{stat}{f' {peak_ul} µL' if peak_ul else ''} ({unit})"
            return text + (" PVC" if pvc else "")
    return column.replace("_", " ")


#: Columns the dock's table shows first (when present), in this order.
FIRST_COLUMNS = ("name", "layer", "unit")


def display_table(df):
    """The readout table as the dock shows it: organ names (label numbers where a label has no name),
    the columns no row fills dropped, headers with units.

    Parameters
    ----------
    df : pandas.DataFrame
        A readout table; ``name`` and ``label`` columns are merged into "organ".

    Returns
    -------
    pandas.DataFrame
        A new table: ``name``, ``layer``, ``unit`` first, then the others in order, all headers from
        :func:`column_header` (the exported table keeps the machine-readable column names).

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"layer": ["PET", "19F"], "unit": ["Bq/mL", "mM"], "label": [4, 7],
    ...                    "name": ["spleen", ""], "mean_bq_ml": [1.5e5, np.nan], "mean_mm": [np.nan, 2.0]})
    >>> list(display_table(df).columns)
    ['organ', 'layer', 'unit', 'mean (Bq/mL)', 'mean (mM)']
    >>> display_table(df)["organ"].tolist()
    ['spleen', 'label 7']
    """
    out = df.copy()
    if "name" in out.columns and "label" in out.columns:
        out["name"] = [
            str(n) if isinstance(n, str) and n else f"label {int(k)}" for n, k in zip(out["name"], out["label"])
        ]
        out = out.drop(columns=["label"])
    out = out.dropna(axis=1, how="all")
    first = [c for c in FIRST_COLUMNS if c in out.columns]
    out = out[first + [c for c in out.columns if c not in first]]
    return out.rename(columns={c: column_header(c) for c in out.columns})


# ============================================================================ 19F calibration
def fluorine_calibration(volume) -> dict | None:
    """The reference concentration (mM of 19F) and 19F atoms per cell a 19F Volume's sidecar gives, or None.

    Reads ``ReferenceConcentration_mM`` (or ``ReferenceConcentration``) and ``FluorineAtomsPerCell``;
    ``NoiseSigma`` is passed on when present.

    Parameters
    ----------
    volume : Volume or any object with ``metadata``
        The 19F image.

    Returns
    -------
    dict or None
        ``reference_concentration_mm`` (mM of 19F), ``fluorine_per_cell`` and ``noise_sigma`` (None when the
        sidecar has none); None unless both of the first two are positive finite numbers.

    Examples
    --------
    >>> from napari_immunotrack.volume import Volume
    >>> meta = {"ReferenceConcentration_mM": "50", "FluorineAtomsPerCell": 2e12}
    >>> fluorine_calibration(Volume(np.zeros((2, 2, 2)), np.eye(4), "F19", metadata=meta))
    {'reference_concentration_mm': 50.0, 'fluorine_per_cell': 2000000000000.0, 'noise_sigma': None}
    >>> fluorine_calibration(Volume(np.zeros((2, 2, 2)), np.eye(4), "F19", metadata={"FluorineAtomsPerCell": 2e12})) is None
    True
    """
    meta = getattr(volume, "metadata", {}) or {}

    def number(*keys):
        for key in keys:
            try:
                value = float(meta[key])
            except (KeyError, TypeError, ValueError):
                continue
            if math.isfinite(value) and value > 0:
                return value
        return None

    reference = number("ReferenceConcentration_mM", "ReferenceConcentration")
    per_cell = number("FluorineAtomsPerCell")
    if reference is None or per_cell is None:
        return None
    return {"reference_concentration_mm": reference, "fluorine_per_cell": per_cell, "noise_sigma": number("NoiseSigma")}


def fluorine_mm(atoms, volume_ml):
    """Mean 19F concentration (mM) of ``atoms`` 19F atoms in ``volume_ml`` mL.

    Parameters
    ----------
    atoms : float or array_like
        Number of 19F atoms.
    volume_ml : float or array_like
        Volume, mL (broadcast against ``atoms``).

    Returns
    -------
    ndarray of float
        ``atoms / N_A / (volume_ml * 1e-3) * 1e3`` in mM; inf or NaN for a zero volume.

    Examples
    --------
    >>> round(float(fluorine_mm(6.02214076e17, 1.0)), 6)  # 1 µmol in 1 mL
    1.0
    """
    atoms, volume_ml = np.asarray(atoms, float), np.asarray(volume_ml, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return atoms / AVOGADRO / (volume_ml * 1e-3) * 1e3


def label_text(value: int, names: dict) -> str:
    """A label value with its name: "7 tumour" ("label 7" when it has none).

    Parameters
    ----------
    value : int
        The label value.
    names : dict
        Label value (int) -> name; an empty name counts as none.

    Returns
    -------
    str

    Examples
    --------
    >>> label_text(7, {7: "tumour"}), label_text(3, {})
    ('7 tumour', 'label 3')
    """
    name = names.get(int(value))
    return f"{int(value)} {name}" if name else f"label {int(value)}"


__all__ = [
    "nuclide_symbol",
    "nuclide_from_half_life",
    "nuclide_text",
    "column_header",
    "display_table",
    "fluorine_calibration",
    "fluorine_mm",
    "label_text",
]
