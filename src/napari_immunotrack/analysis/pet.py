"""PET/SPECT quantification: activity concentration (Bq/mL), SUV and ROI readouts.

Header reading (:class:`PetHeader`, :func:`read_pet_header`) lives in :mod:`.pet_header` and is
re-exported here; this module holds the SUV maths, the peak sphere, densities and the ROI table.

The steps, each a pure function of a :class:`~napari_immunotrack.volume.Volume`
(its ``metadata``: the DICOM reader keeps the first slice's header in
``metadata["dicom_header"]`` and per-slice times in ``metadata["slice_headers"]``;
a NIfTI's JSON sidecar gives the same DICOM keywords as plain keys):

1. :func:`read_pet_header` parses the quantitative header fields into a
   :class:`PetHeader` (dose, injection and scan times, half-life, weight,
   height, sex, units, decay correction), recording where each value came
   from, every guess as a warning, and every user override.
2. :func:`activity_concentration` turns the stored values into Bq/mL
   decay-corrected to one reference time (``header.reference_time``).
3. :func:`suv_factor` gives the factor that turns Bq/mL into SUV of a type
   (bw, lbm, bsa, ibw); :func:`suv` makes an SUV Volume.
4. :func:`quantify_pet` gives the per-ROI table (Bq/mL and SUV statistics,
   SUVpeak, total activity, %ID, %ID/g), with ROIs drawn on any grid and
   carried to the PET's own grid (:mod:`.roi`).

Rules (see docs/methods/pet.md; each choice is recorded in ``header.sources``)
------------------------------------------------------------------------------
Units
    BQML (Bq/mL); GML (values are SUV of the header's SUVType, BW when
    absent); CM2ML (SUVbsa in cm2/mL); Philips CNTS with the private Activity
    Concentration Scale Factor (7053,1009) (preferred) or SUV Scale Factor
    (7053,1000), applied to the rescaled value; SPECT or PET counts (CNTS,
    PROPCNTS, CPS, PROPCPS) with a calibration factor in cps/MBq that the user
    gives (refused without it). BIDS spellings ("Bq/mL", "kBq/mL", "g/mL") are
    accepted from NIfTI sidecars.
Decay correction
    A_dec = A_inj 2^(-dt/T1/2), dt from the injection to the reference time.
    START: the reference time is SeriesDate/SeriesTime, unless it is later
    than the earliest AcquisitionDate/Time (a post-processed series): then
    GE's private scan date-time (0009,100D) when present, else the earliest
    acquisition time (warning). ADMIN: values are corrected to the injection,
    no decay (the reference time is the injection). NONE: each slice is
    corrected from its own acquisition start t_i and duration D to the
    earliest acquisition start t0: C * 2^((t_i - t0)/T1/2) * lambda D / (1 - e^(-lambda D)).
Injection time
    RadiopharmaceuticalStartDateTime; else RadiopharmaceuticalStartTime on the
    scan's date, moved to the day before when that would put the injection
    after the scan (an injection before midnight; warning). Both present and
    disagreeing: refused.
Half-life
    RadionuclideHalfLife from the header; else the nuclide's value from
    :data:`HALF_LIVES_S` (warning). A header half-life more than 5% away from
    the named nuclide's is refused as contradictory.
Dose
    RadionuclideTotalDose in Bq; a value between 0 and 1e4 is taken as MBq
    (warning; docs/methods/pet.md#dose).
Weight
    PatientWeight is kg (DICOM). Taken as grams (warning) when above 1000, or
    when the species is a mouse or rat (PatientSpeciesDescription) and the
    value is above 2 (no mouse or rat weighs 2 kg): a mouse is 0.025 kg.
    Without a species, a value from 2 to 1000 is refused as ambiguous (a mouse
    written as 25 g cannot be told from a 25 kg child) unless a human height
    (PatientSize >= 0.5 m) says human, or weight_unit / --weight-kg is given;
    under 2 it is kg (an animal).
Species
    Animals (a non-human species, or under 2 kg) get no human body-size
    formula: SUVlbm needs a measured lean mass, SUVbsa Meeh's k W^(2/3);
    SUVpeak uses a sphere of 2 x the PSF FWHM restricted to the ROI.
Height
    PatientSize is m; above 3 it is taken as cm (warning).
Sex
    M or F; anything else averages the male and female formulas (warning)
    where the formula depends on sex (LBM, IBW).
SUV
    SUVbw = C W[g] / A_dec; SUVbsa = C BSA[cm2] / A_dec with Du Bois BSA
    0.007184 W^0.425 H[cm]^0.725 m2; SUVlbm = C LBM[g] / A_dec with James
    (male 1.10W - 128(W/H)^2, female 1.07W - 148(W/H)^2, H in cm) or
    Janmahasatian (male 9270W/(6680 + 216 BMI), female 9270W/(8780 + 244 BMI));
    SUVibw = C IBW[g] / A_dec with Devine's ideal body weight (male
    50 + 2.3 (H[in] - 60), female 45.5 + 2.3 (H[in] - 60) kg).

Examples
--------
>>> import numpy as np
>>> from napari_immunotrack.volume import Volume
>>> meta = {"Units": "BQML", "DecayCorrection": "START", "RadionuclideTotalDose": 370e6,
...         "RadiopharmaceuticalStartDateTime": "20240101100000", "SeriesDate": "20240101",
...         "SeriesTime": "110000", "RadionuclideHalfLife": 6586.2, "PatientWeight": 70, "PatientSize": 1.75}
>>> pet = Volume(np.full((2, 2, 2), 5000.0, np.float32), np.eye(4), "PT", "BQML", meta)
>>> header = read_pet_header(pet)
>>> round(header.decayed_dose_bq / 1e6, 2)
253.31
>>> round(float(suv(pet, "bw", header).data[0, 0, 0]), 4)
1.3817
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError
from ..params import FROM_MODEL, Param, ParamModel
from ..volume import Volume

# header reading lives in .pet_header; its public names stay importable from here
from .pet_header import (  # noqa: F401
    HALF_LIVES_S,
    LBM_FORMULAS,
    SUV_TYPES,
    SUV_UNITS,
    PetHeader,
    body_size,
    is_non_human,
    normalise_suv_type,
    nuclide_key,
    parse_dicom_date,
    parse_dicom_datetime,
    parse_dicom_time,
    read_pet_header,
)


# ----------------------------------------------------------------------------- SUV
def suv_factor(header: PetHeader, suv_type: str = "bw", lbm_formula: str = "janmahasatian") -> float:
    """Factor F with SUV = F * C[Bq/mL]: the body size divided by the decayed dose.

    ``F = body size / A_dec`` (docs/methods/pet.md#body-size): the weight in g for SUVbw, the lean
    body mass in g for SUVlbm, the body surface area in cm2 for SUVbsa, Devine's ideal body weight in
    g for SUVibw, and ``A_dec`` the injected activity decayed to the reference time (Bq,
    docs/methods/pet.md#decay). For SUVlbm and SUVibw of unknown sex the mean of the male and female
    formulas is used and a warning is added to ``header.warnings``.

    Parameters
    ----------
    header : PetHeader
        Parsed header (:func:`read_pet_header`); needs the dose, the times (or ADMIN decay correction)
        and the weight, plus height and sex for "lbm", "bsa" and "ibw" (human formulas).
    suv_type : {"bw", "lbm", "bsa", "ibw"}, default "bw"
        SUV type; a leading "SUV" and upper case are accepted ("SUVbw").
    lbm_formula : {"janmahasatian", "james"}, default "janmahasatian"
        Lean-body-mass formula of SUVlbm (ignored for the other types, and when the header holds a
        measured lean mass).

    Returns
    -------
    float
        F in g/Bq (bw, lbm, ibw) or cm2/Bq (bsa), so that SUV = F x C in g/mL (or cm2/mL).

    Raises
    ------
    InputError
        When a value the SUV type needs is missing, or the type is unknown.

    Examples
    --------
    >>> import datetime as dt
    >>> h = PetHeader(units="BQML", decay_correction="ADMIN", dose_bq=1e8, weight_kg=70.0, height_m=1.75,
    ...               sex="M", injection_time=dt.datetime(2024, 1, 1, 9))
    >>> suv_factor(h, "bw")      # 70 000 g / 1e8 Bq
    0.0007
    >>> round(suv_factor(h, "lbm", "james"), 7)
    0.0005652
    """
    suv_type = normalise_suv_type(suv_type)
    header.require(suv_type, lbm_formula)
    if suv_type in ("lbm", "ibw") and header.sex not in ("M", "F"):
        msg = f"sex unknown ({header.sex}): SUV{suv_type} uses the mean of the male and female formulas."
        if msg not in header.warnings:
            header.warn(msg)
    return body_size(header, suv_type, lbm_formula) / header.decayed_dose_bq


def decay_factors(header: PetHeader, n_slices: int) -> np.ndarray:
    """Per-slice factors that bring stored values to the reference time (all 1 unless DecayCorrection NONE).

    For NONE, slice i acquired from t_i for D_i seconds is multiplied by
    ``2^((t_i - t0)/T1/2) * lambda D_i / (1 - exp(-lambda D_i))``, t0 = ``header.reference_time`` and
    lambda = ln 2 / T1/2 (docs/methods/pet.md#decay). A single acquisition time (one frame) applies to
    every slice.

    Parameters
    ----------
    header : PetHeader
        Parsed header: ``decay_correction``, and for NONE ``half_life_s`` (s), ``slice_times``
        (datetimes), ``slice_durations_s`` (s, 0 or absent: no in-frame correction) and
        ``reference_time``.
    n_slices : int
        Number of slices along axis 0 of the image.

    Returns
    -------
    numpy.ndarray
        float64, shape ``(n_slices,)``, dimensionless multipliers.

    Raises
    ------
    InputError
        DecayCorrection NONE without a half-life or without acquisition times.

    Examples
    --------
    >>> import datetime as dt
    >>> t0 = dt.datetime(2024, 1, 1, 10)
    >>> h = PetHeader(decay_correction="NONE", half_life_s=6586.2, reference_time=t0,
    ...               slice_times=[t0, t0 + dt.timedelta(seconds=6586.2)], slice_durations_s=[0.0, 0.0])
    >>> decay_factors(h, 2)    # the second slice started one half-life later
    array([1., 2.])
    >>> decay_factors(PetHeader(decay_correction="START"), 3)
    array([1., 1., 1.])
    """
    out = np.ones(n_slices)
    if header.decay_correction != "NONE":
        return out
    if not header.half_life_s:
        raise InputError("DecayCorrection NONE needs the half-life to correct each frame; give --half-life-s.")
    starts = header.slice_times
    if not starts:
        raise InputError(
            "DecayCorrection NONE but no AcquisitionTime for the frames; cannot decay-correct. "
            "Give the scan time or a decay-corrected series."
        )
    lam = math.log(2.0) / header.half_life_s
    ref = header.reference_time
    if len(starts) == 1:
        starts, durations = starts * n_slices, list(header.slice_durations_s or [0.0]) * n_slices
    else:
        durations = header.slice_durations_s or [0.0] * len(starts)
    for i, (t, d) in enumerate(zip(starts, durations)):
        delay = (t - ref).total_seconds()
        in_frame = lam * d / (-math.expm1(-lam * d)) if d > 0 else 1.0
        out[i] = 2.0 ** (delay / header.half_life_s) * in_frame
    return out


def activity_concentration(
    volume: Volume,
    header: PetHeader | None = None,
    *,
    need_dose: bool = False,
    lbm_formula: str = "janmahasatian",
    **overrides,
) -> Volume:
    """Activity concentration (Bq/mL) at the header's reference time, on the volume's own grid.

    Parameters
    ----------
    volume : Volume
        PET or SPECT, values as the reader returns them (rescale slope applied).
    header : PetHeader, optional
        From :func:`read_pet_header`; parsed from ``volume`` (with ``overrides``) when omitted.
    need_dose : bool
        Refuse when the decayed dose is unknown even if the units would not need it.
    lbm_formula : {"janmahasatian", "james"}
        The lean-body-mass formula of pixel values stored as SUVlbm (Units GML, SUVType LBM).
    **overrides
        Keyword arguments of :func:`read_pet_header` (``weight_kg``, ``dose_mbq``, ...), used only
        when ``header`` is omitted.

    Returns
    -------
    Volume
        float32, unit "Bq/mL", metadata["pet_header"] = header.as_dict() and
        metadata["activity_scale"] (the factor applied to the stored values; docs/methods/pet.md#activity).

    Examples
    --------
    >>> import numpy as np
    >>> from napari_immunotrack.volume import Volume
    >>> v = Volume(np.full((1, 2, 2), 2.0), np.eye(4), "PT", "BQML", {"Units": "BQML", "DecayCorrection": "ADMIN"})
    >>> float(activity_concentration(v).data.max())
    2.0
    """
    if header is None:
        header = read_pet_header(volume, **overrides)
    header.require(None, need_dose=need_dose)
    if volume.data.ndim == 4:
        raise InputError("a dynamic (4D) PET was given; select one frame first.")
    data = volume.numpy()
    units = header.units
    if units == "BQML":
        scale = header.unit_scale
    elif units == "GML":
        scale = header.decayed_dose_bq / body_size(header, header.suv_type_in_file or "bw", lbm_formula)
    elif units == "CM2ML":
        scale = header.decayed_dose_bq / body_size(header, "bsa")
    elif header.philips_activity_scale is not None:
        scale = header.philips_activity_scale
    elif header.philips_suv_scale is not None:
        scale = header.philips_suv_scale * header.decayed_dose_bq / body_size(header, "bw")
    else:  # counts with a calibration: counts -> cps -> MBq per voxel -> Bq/mL
        voxel_ml = volume.voxel_volume_mm3 / 1000.0
        rate = 1.0 if units in ("CPS", "PROPCPS") else 1.0 / header.acquisition_duration_s
        scale = rate / header.calibration_cps_per_mbq * 1e6 / voxel_ml
    factors = decay_factors(header, data.shape[0])
    if scale != 1.0 or not np.all(factors == 1.0) or data.dtype != np.float32:
        data = data.astype(np.float32, copy=True)  # never scale the caller's array in place
        if scale != 1.0:
            data *= np.float32(scale)
        if not np.all(factors == 1.0):
            data *= factors.astype(np.float32)[:, None, None]
    meta = dict(volume.metadata)
    meta.pop("dicom_header", None)
    meta["pet_header"] = header.as_dict()
    meta["activity_scale"] = float(scale)
    return volume.replace(data=data, unit="Bq/mL", metadata=meta, name=(volume.name or "pet") + "_bqml")


def suv(
    volume: Volume,
    suv_type: str = "bw",
    header: PetHeader | None = None,
    *,
    lbm_formula: str = "janmahasatian",
    **overrides,
) -> Volume:
    """SUV Volume of ``suv_type`` ("bw", "lbm", "bsa", "ibw") on the volume's own grid.

    The values are :func:`activity_concentration` (Bq/mL at the reference time) times
    :func:`suv_factor` (docs/methods/pet.md#body-size).

    Parameters
    ----------
    volume : Volume
        PET or SPECT (3D), values as the reader returns them, header in ``metadata``.
    suv_type : {"bw", "lbm", "bsa", "ibw"}, default "bw"
        SUV type.
    header : PetHeader, optional
        Parsed header (with the user's edits); parsed from ``volume`` with ``overrides`` when omitted.
    lbm_formula : {"janmahasatian", "james"}, default "janmahasatian"
        Lean-body-mass formula of SUVlbm (and of stored SUVlbm values).
    **overrides
        Keyword arguments of :func:`read_pet_header` (``weight_kg``, ``dose_mbq``, ...), used only
        when ``header`` is omitted.

    Returns
    -------
    Volume
        float32, unit "SUVbw (g/mL)" (g/mL for bw, lbm, ibw; cm2/mL for bsa), name "<name>_suv<type>";
        ``metadata["suv_factor"]`` (F) and ``metadata["suv_type"]``, plus the header as
        ``metadata["pet_header"]``.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_immunotrack.volume import Volume
    >>> meta = {"Units": "BQML", "DecayCorrection": "ADMIN", "RadionuclideTotalDose": 1e8, "PatientWeight": 70,
    ...         "PatientSize": 1.75,
    ...         "RadiopharmaceuticalStartDateTime": "20240101100000", "SeriesDate": "20240101", "SeriesTime": "100000"}
    >>> pet = Volume(np.full((2, 2, 2), 5000.0, np.float32), np.eye(4), "PT", "BQML", meta)
    >>> s = suv(pet, "bw")
    >>> round(float(s.data[0, 0, 0]), 3), s.unit   # 5000 Bq/mL x 70 000 g / 1e8 Bq
    (3.5, 'SUVbw (g/mL)')
    """
    if header is None:
        header = read_pet_header(volume, **overrides)
    suv_type = normalise_suv_type(suv_type)
    factor = suv_factor(header, suv_type, lbm_formula)
    conc = activity_concentration(volume, header, lbm_formula=lbm_formula)
    out = conc.replace(
        data=conc.data * np.float32(factor),
        unit=f"SUV{suv_type} ({SUV_UNITS[suv_type]})",
        name=(volume.name or "pet") + f"_suv{suv_type}",
    )
    out.metadata["suv_factor"] = factor
    out.metadata["suv_type"] = suv_type
    return out


# ----------------------------------------------------------------------------- species and peak sphere
#: Default PSF FWHM (mm) of a preclinical PET/SPECT when neither the header nor the user gives one
#: (small-animal PET with 18F/89Zr: about 1.2-1.8 mm at the centre of the field of view; docs/methods/pet.md#suvpeak).
PRECLINICAL_PSF_FWHM_MM = 1.5
#: PERCIST's SUVpeak sphere for humans (mL).
PERCIST_PEAK_ML = 1.0


def psf_fwhm_from_header(volume: Volume) -> float | None:
    """The largest PSF FWHM (mm) recorded with the image, or None.

    Looks for ``PSF_FWHM_mm``, ``PSFFWHM``, ``psf_fwhm_mm`` or ``SpatialResolution_mm`` in the
    metadata (a NIfTI's JSON sidecar), in that order; a scalar or one value per axis. Values that are
    not finite and positive are ignored.

    Parameters
    ----------
    volume : Volume
        The PET/SPECT image.

    Returns
    -------
    float or None
        The largest of the per-axis FWHMs (mm), the conservative choice for the SUVpeak sphere
        (docs/methods/pet.md#suvpeak); None when the metadata holds none.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_immunotrack.volume import Volume
    >>> psf_fwhm_from_header(Volume(np.ones((1, 1, 1)), np.eye(4), "PT", metadata={"PSF_FWHM_mm": [1.2, 1.6, 1.6]}))
    1.6
    >>> psf_fwhm_from_header(Volume(np.ones((1, 1, 1)), np.eye(4), "PT")) is None
    True
    """
    meta = volume.metadata or {}
    for key in ("PSF_FWHM_mm", "PSFFWHM", "psf_fwhm_mm", "SpatialResolution_mm"):
        value = meta.get(key)
        if value is None:
            continue
        try:
            v = np.atleast_1d(np.asarray(value, float))
        except (TypeError, ValueError):
            continue
        if v.size and np.all(np.isfinite(v)) and np.all(v > 0):
            return float(v.max())
    return None


def peak_label(volume_ml: float) -> str:
    """Column suffix naming a peak sphere's volume: 0.0118 mL -> "12ul", 2 mL -> "2ml".

    Parameters
    ----------
    volume_ml : float
        Sphere volume (mL).

    Returns
    -------
    str
        Microlitres rounded to an integer with "ul" below 999.5 uL, else mL to 3 significant digits
        with "ml".

    Examples
    --------
    >>> peak_label(0.01149), peak_label(1.0), peak_label(2.5)
    ('11ul', '1ml', '2.5ml')
    """
    ul = volume_ml * 1000.0
    return f"{ul:.0f}ul" if ul < 999.5 else f"{volume_ml:.3g}ml"


def peak_sphere(
    header: PetHeader, volume: Volume, peak_ml: float | None = None, psf_fwhm_mm: float | None = None
) -> dict:
    """How SUVpeak is measured for this scan (docs/methods/pet.md#suvpeak).

    Humans: PERCIST's 1 mL sphere (any voxels around a centre in the ROI). Animals
    (:func:`is_non_human`): a sphere of diameter 2 x the PSF FWHM (``psf_fwhm_mm``, else the
    header's, else :data:`PRECLINICAL_PSF_FWHM_MM`) restricted to the ROI, with the volume in the
    column names (``suv_bw_peak_14ul``). ``peak_ml`` overrides the volume.

    Parameters
    ----------
    header : PetHeader
        Parsed header; its species or weight decides human or animal.
    volume : Volume
        The PET, for the PSF FWHM recorded in its metadata (:func:`psf_fwhm_from_header`).
    peak_ml : float, optional
        Sphere volume (mL) chosen by the user; must be positive.
    psf_fwhm_mm : float, optional
        PSF FWHM (mm) given by the user; takes precedence over the header's.

    Returns
    -------
    dict
        ``volume_ml`` (mL), ``radius_mm`` (mm), ``restricted`` (bool: the sphere is limited to the
        ROI's voxels), ``suffix`` (column-name suffix, "" for PERCIST's 1 mL), ``reason`` (text),
        ``non_human`` (bool) and ``psf_fwhm_mm`` (the FWHM used or found, mm, or None).

    Examples
    --------
    >>> import numpy as np
    >>> from napari_immunotrack.volume import Volume
    >>> pet = Volume(np.ones((1, 1, 1)), np.eye(4), "PT")
    >>> s = peak_sphere(PetHeader(weight_kg=0.025), pet)    # a mouse: 3 mm sphere
    >>> round(s["volume_ml"], 4), round(s["radius_mm"], 2), s["restricted"], s["suffix"]
    (0.0141, 1.5, True, '_14ul')
    >>> s = peak_sphere(PetHeader(weight_kg=70.0), pet)     # a human: PERCIST
    >>> s["volume_ml"], round(s["radius_mm"], 2), s["suffix"]
    (1.0, 6.2, '')
    """
    from . import roi as _roi

    animal = is_non_human(header)
    fwhm = psf_fwhm_mm if psf_fwhm_mm is not None else psf_fwhm_from_header(volume)
    if peak_ml is not None:
        if not peak_ml > 0:
            raise InputError(f"the peak sphere volume must be positive (got {peak_ml} mL).")
        volume_ml, reason = float(peak_ml), "volume given"
    elif animal:
        source = "header/user" if fwhm is not None else "preclinical default"
        fwhm = fwhm if fwhm is not None else PRECLINICAL_PSF_FWHM_MM
        d_mm = 2.0 * fwhm
        volume_ml, reason = math.pi / 6.0 * d_mm**3 / 1000.0, f"diameter 2 x PSF FWHM {fwhm:g} mm ({source})"
    else:
        volume_ml, reason = PERCIST_PEAK_ML, "PERCIST 1 mL (human)"
    restricted = animal
    suffix = "" if (not animal and abs(volume_ml - PERCIST_PEAK_ML) < 1e-12) else "_" + peak_label(volume_ml)
    return {
        "volume_ml": volume_ml,
        "radius_mm": _roi.peak_radius_mm(volume_ml),
        "restricted": restricted,
        "suffix": suffix,
        "reason": reason,
        "non_human": animal,
        "psf_fwhm_mm": fwhm,
    }


# ----------------------------------------------------------------------------- tissue density
#: Mass density (g/mL) by organ name, for %ID/g (docs/methods/pet.md#density; ICRU Report 44 / ICRP 89 values).
TISSUE_DENSITY_G_ML = {
    "lung": 0.30,  # inflated lung with its air (ICRU 44: 0.26; ICRP 89: ~0.3)
    "fat": 0.95,  # adipose tissue (ICRU 44: 0.95)
    "adipose": 0.95,
    "bone": 1.92,  # cortical bone (ICRU 44: 1.92)
    "cortical_bone": 1.92,
    "trabecular_bone": 1.18,
    "bone_marrow": 1.03,
    "blood": 1.06,
    "vessel": 1.06,
    "liver": 1.06,
    "spleen": 1.06,
    "kidney": 1.05,
    "muscle": 1.05,
    "brain": 1.04,
    "air": None,  # gas holds no tissue: %ID/g is not defined (NaN)
    "gut_gas": None,
}
#: Soft tissue not in the table (ICRU 44 soft tissue: 1.03-1.06; we use 1.04).
SOFT_TISSUE_DENSITY_G_ML = 1.04


def density_for(name: str | None, table: dict | None = None, default: float = SOFT_TISSUE_DENSITY_G_ML) -> tuple:
    """(density g/mL, source) of an organ by name: the user's table first, then ours by name or prefix.

    Names are matched case-insensitively with spaces read as underscores; "kidney_left" falls back to
    "kidney" (the longest known prefix). Gas (air, gut gas) has no tissue density: NaN
    (docs/methods/pet.md#density).

    Parameters
    ----------
    name : str or None
        Organ or ROI name (from the label table).
    table : dict, optional
        The user's densities ``{name: g/mL}``; they override :data:`TISSUE_DENSITY_G_ML`.
    default : float, default :data:`SOFT_TISSUE_DENSITY_G_ML` (1.04)
        Density (g/mL) of a name found in neither table.

    Returns
    -------
    tuple of (float, str)
        The density (g/mL, NaN for gas) and where it came from: "user table", "tissue table",
        "gas: no tissue" or "soft tissue default".

    Examples
    --------
    >>> density_for("lung")[0], density_for("kidney_left")[0], density_for("tumour")[0]
    (0.3, 1.05, 1.04)
    >>> density_for("Lung", {"lung": 0.26}), density_for("air")
    ((0.26, 'user table'), (nan, 'gas: no tissue'))
    """
    key = str(name or "").strip().lower().replace(" ", "_")
    for source, tab in (("user table", table or {}), ("tissue table", TISSUE_DENSITY_G_ML)):
        tab = {str(k).lower(): v for k, v in tab.items()}
        if key in tab:
            return (float("nan"), "gas: no tissue") if tab[key] is None else (float(tab[key]), source)
        # kidney_left -> kidney, ln_inguinal_right -> ln_inguinal
        parts = key.split("_")
        for n in range(len(parts) - 1, 0, -1):
            if "_".join(parts[:n]) in tab and tab["_".join(parts[:n])] is not None:
                return float(tab["_".join(parts[:n])]), source
    return float(default), "soft tissue default"


# ----------------------------------------------------------------------------- ROI table
#: The tunable parameters of :func:`quantify_pet`: the one place their defaults and limits are written
#: (``immunotrack quantify``, the Quantitative readouts dock, the batch steps ``pet`` and ``spect`` and the saved
#: study state take them from here). ``suv_types`` (a list of :data:`SUV_TYPES`) and the header
#: replacements stay with the function.
PET_PARAMETERS = ParamModel(
    "pet",
    [
        Param(
            "lbm_formula",
            str,
            "janmahasatian",
            "lean body mass formula for SUV lbm",
            choices=LBM_FORMULAS,
            label="LBM formula",
        ),
        Param(
            "supersample",
            int,
            3,
            "subvoxels per axis for partial-voxel weights on rotated grids",
            minimum=1,
        ),
        Param(
            "density_g_ml",
            float,
            None,
            "tissue density for %ID/g: auto (per organ from the ROI's label names, "
            "docs/methods/pet.md#density) or one value for every ROI",
            unit="g/mL",
            minimum=0.0,
            exclusive_minimum=True,
            optional=True,
            none_word="auto",
            flag="--density",
        ),
        Param(
            "peak",
            bool,
            True,
            "compute SUVpeak",
            label="SUVpeak",
            off_help="skip SUVpeak",
        ),
        Param(
            "peak_ml",
            float,
            None,
            "SUVpeak sphere volume: auto (1 mL PERCIST for humans; for animals a sphere of "
            "2 x the PSF FWHM restricted to the ROI) or a number",
            unit="mL",
            minimum=0.0,
            exclusive_minimum=True,
            optional=True,
            none_word="auto",
        ),
        Param(
            "peak_fwhm_mm",
            float,
            None,
            f"PSF FWHM sizing the preclinical SUVpeak sphere (default: header, else {PRECLINICAL_PSF_FWHM_MM:g} mm)",
            unit="mm",
            minimum=0.0,
            exclusive_minimum=True,
            optional=True,
        ),
    ],
)


@PET_PARAMETERS.bind
def quantify_pet(
    pet: Volume,
    rois,
    *,
    suv_types=("bw",),
    header: PetHeader | None = None,
    lbm_formula: str = FROM_MODEL,
    transform=None,
    supersample: int = FROM_MODEL,
    density_g_ml: float | None = FROM_MODEL,
    peak: bool = FROM_MODEL,
    peak_ml: float | None = FROM_MODEL,
    peak_fwhm_mm: float | None = FROM_MODEL,
    label_names: dict | None = None,
    density_table: dict | None = None,
    progress=None,
    **overrides,
):
    """Per-ROI PET readouts on the PET's own grid.

    ``lbm_formula``, ``supersample``, ``density_g_ml``, ``peak``, ``peak_ml`` and
    ``peak_fwhm_mm`` take their defaults from :data:`PET_PARAMETERS` (shown in this
    signature) and are checked against it.

    Parameters
    ----------
    pet : Volume
        PET/SPECT volume with its header in ``metadata``.
    rois : Volume or RoiMap
        Label volume on any grid (carried to the PET grid through world
        coordinates with partial-voxel weights), or an already carried
        :class:`~napari_immunotrack.analysis.roi.RoiMap`.
    suv_types : sequence of str
        SUV types to report; "bw" is always included when the weight is known.
    header : PetHeader, optional
        Parsed header (with the user's edits); parsed from ``pet`` with ``overrides`` otherwise.
    lbm_formula : {"janmahasatian", "james"}
    transform : (4, 4) array, optional
        World-to-world map from PET world to ROI world (a registration result).
    supersample : int
        Subsamples per axis for the partial-voxel weights (1 = nearest neighbour).
    density_g_ml : float, optional
        One tissue density for every ROI (g/mL) for %ID/g; default: per label from
        its name (:func:`density_for`, ``docs/methods/pet.md#density``).
    peak : bool
        Compute SUVpeak.
    peak_ml : float, optional
        Volume of the SUVpeak sphere; default from :func:`peak_sphere` (PERCIST 1 mL for
        humans; 2 x PSF FWHM diameter, restricted to the ROI, for animals).
    peak_fwhm_mm : float, optional
        PSF FWHM (mm) for the preclinical peak sphere (default: header, else
        ``PRECLINICAL_PSF_FWHM_MM``).
    label_names : {label: name}, optional
        Organ names (for the density table).
    density_table : {name: g/mL}, optional
        The user's densities (override the tissue table by name).
    progress : callable, optional

    Returns
    -------
    pandas.DataFrame
        One row per label: label, voxels, volume_ml, mean/sd/min/median/max_bq_ml, peak_bq_ml[_<V>ul],
        suv_<t>_mean/sd/min/median/max, suv_<t>_peak[_<V>ul], total_activity_kbq, total_activity_mbq,
        percent_id, percent_id_per_ml, percent_id_per_g, density_g_ml. ``df.attrs`` holds "header",
        "warnings", "parameters".

    Examples
    --------
    >>> df = quantify_pet(pet, roi_labels)          # doctest: +SKIP
    >>> df[["label", "suv_bw_mean", "suv_bw_peak"]]   # doctest: +SKIP
    """
    from .. import progress as _progress
    from . import roi as _roi

    if density_g_ml is not None and not density_g_ml > 0:
        raise InputError(f"the tissue density must be positive (got {density_g_ml} g/mL).")
    if header is None:
        header = read_pet_header(pet, **overrides)
    types = []
    for t in ["bw", *suv_types]:
        t = normalise_suv_type(t)
        if t not in types:
            types.append(t)
    header.require(types[-1] if len(types) > 1 else "bw", lbm_formula)
    factors = {t: suv_factor(header, t, lbm_formula) for t in types}
    sphere = peak_sphere(header, pet, peak_ml, peak_fwhm_mm) if peak else None
    _progress.report(progress, 0.02, "activity concentration")
    conc = activity_concentration(pet, header, need_dose=True, lbm_formula=lbm_formula)
    _progress.report(progress, 0.1, "carrying ROIs to the PET grid")
    stats = _roi.roi_statistics(
        conc,
        rois,
        transform=transform,
        supersample=supersample,
        peak=peak,
        peak_radius_mm=sphere["radius_mm"] if sphere else _roi.PEAK_RADIUS_MM,
        peak_in_roi_only=bool(sphere and sphere["restricted"]),
        progress=_progress.scaled(progress, 0.1, 0.98),
    )
    import pandas as pd

    a_dec = header.decayed_dose_bq
    suffix = sphere["suffix"] if sphere else ""
    out = pd.DataFrame({"label": stats["label"], "voxels": stats["voxels"], "volume_ml": stats["volume_ml"]})
    for s in ("mean", "sd", "min", "median", "max", "peak"):
        if s in stats:
            out[f"{s}_bq_ml" + (suffix if s == "peak" else "")] = stats[s]
    for t in types:
        for s in ("mean", "sd", "min", "median", "max", "peak"):
            if s in stats:
                out[f"suv_{t}_{s}" + (suffix if s == "peak" else "")] = stats[s] * factors[t]
    if "peak_method" in stats:
        out["peak_method"] = stats["peak_method"]
    total_bq = stats["integral"]  # sum of w * C[Bq/mL] * V[mL]
    out["total_activity_kbq"] = total_bq / 1e3
    out["total_activity_mbq"] = total_bq / 1e6
    out["percent_id"] = 100.0 * total_bq / a_dec
    out["percent_id_per_ml"] = out["percent_id"] / stats["volume_ml"]
    if density_g_ml is not None:
        densities = [(float(density_g_ml), "user (one value)")] * len(out)
    else:
        names = label_names or {}
        densities = [density_for(names.get(int(v), ""), density_table) for v in out["label"]]
    out["density_g_ml"] = [d for d, _ in densities]
    out["percent_id_per_g"] = out["percent_id_per_ml"] / out["density_g_ml"]
    out["fraction_in_fov"] = stats["fraction_in_fov"]
    warns = list(header.warnings) + list(stats.attrs.get("warnings", []))
    out.attrs["warnings"] = warns
    out.attrs["header"] = header.as_dict()
    out.attrs["parameters"] = {
        "suv_types": types,
        "lbm_formula": lbm_formula,
        "supersample": supersample,
        "density_g_ml": density_g_ml if density_g_ml is not None else "per label (docs/methods/pet.md#density)",
        "density_sources": sorted({src for _, src in densities}),
        "peak_sphere_ml": sphere["volume_ml"] if sphere else None,
        "peak_sphere": {k: v for k, v in sphere.items()} if sphere else None,
        "suv_factors": factors,
        "decayed_dose_bq": a_dec,
        "reference_time": header.reference_time.isoformat() if header.reference_time else None,
        "roi_mapping": stats.attrs.get("method"),
    }
    _progress.report(progress, 1.0, "done")
    return out


def quantify_frames(pet: Volume, rois, **kwargs):
    """Per-frame PET readouts of a dynamic study: one :func:`quantify_pet` table per frame, stacked.

    Each frame is taken with :func:`napari_immunotrack.io.inveon.select_frames` (its timing becomes the
    header's) and quantified with the same ROIs and options.

    Parameters
    ----------
    pet : Volume
        Dynamic (4D: frame, z, y, x) PET with ``metadata["frames"]`` (each frame's
        ``ActualFrameDuration`` in ms and ``frame_start_s``).
    rois : Volume or RoiMap
        Label volume on any grid, or ROIs already carried to the PET grid with
        :func:`napari_immunotrack.analysis.roi.carry_rois` (cheaper: carried once, not per frame).
    **kwargs
        Keyword arguments of :func:`quantify_pet` (``suv_types``, ``peak``, header overrides, ...).

    Returns
    -------
    pandas.DataFrame
        The columns of :func:`quantify_pet` with ``frame`` (0-based), ``frame_start_s`` (s) and
        ``frame_duration_s`` (s) first; one row per frame and label. ``attrs`` are the first frame's.

    Raises
    ------
    InputError
        When ``pet`` is not 4D.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_immunotrack.volume import Volume
    >>> frames = [{"ActualFrameDuration": 60000.0, "frame_start_s": 0.0},
    ...           {"ActualFrameDuration": 60000.0, "frame_start_s": 60.0}]
    >>> meta = {"Units": "BQML", "DecayCorrection": "ADMIN", "RadionuclideTotalDose": 1e6, "PatientWeight": 0.025,
    ...         "RadiopharmaceuticalStartDateTime": "20240101100000", "SeriesDate": "20240101",
    ...         "SeriesTime": "100000", "leading_axis": "time", "frames": frames}
    >>> data = np.stack([np.full((4, 4, 4), 1000.0), np.full((4, 4, 4), 2000.0)]).astype(np.float32)
    >>> pet = Volume(data, np.eye(4), "PT", "BQML", meta)
    >>> rois = Volume(np.pad(np.ones((2, 2, 2), np.uint8), 1), np.eye(4), "labels")
    >>> df = quantify_frames(pet, rois, peak=False)
    >>> print(df[["frame", "frame_start_s", "label", "mean_bq_ml", "suv_bw_mean"]].to_string(index=False))
     frame  frame_start_s  label  mean_bq_ml  suv_bw_mean
         0            0.0      1      1000.0        0.025
         1           60.0      1      2000.0        0.050
    """
    import pandas as pd

    from ..io.inveon import select_frames

    if pet.data.ndim != 4:
        raise InputError("per-frame readouts need a dynamic (4D) PET; this one is 3D.")
    tables = []
    frames = pet.metadata.get("frames") or [{} for _ in range(pet.data.shape[0])]
    for i in range(pet.data.shape[0]):
        df = quantify_pet(select_frames(pet, i), rois, **kwargs)
        df.insert(0, "frame_duration_s", float(frames[i].get("ActualFrameDuration") or 0.0) / 1000.0)
        df.insert(0, "frame_start_s", frames[i].get("frame_start_s"))
        df.insert(0, "frame", i)
        tables.append(df)
    out = pd.concat(tables, ignore_index=True)
    out.attrs = dict(tables[0].attrs)
    return out
