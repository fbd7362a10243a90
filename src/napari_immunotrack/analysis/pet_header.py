"""PET/SPECT header reading: the quantitative DICOM (or BIDS sidecar) fields as a :class:`PetHeader`.

Split from :mod:`.pet` (which keeps the SUV maths and re-exports every public name here): units, decay
correction, injection and scan times, half-life, dose, weight, height, sex and species, each with where it
came from, every guess warned and every user override recorded. Rules: ``docs/methods/pet.md``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import re
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..errors import ImmunotrackWarning, InputError
from ..volume import Volume

#: Half-lives (s) of the nuclides used for cell tracking and PET (used when the header lacks one).
HALF_LIVES_S = {
    "F18": 6586.2,
    "GA68": 4062.6,
    "ZR89": 282240.0,
    "CU64": 45720.0,
    "IN111": 242330.0,
    "TC99M": 21624.0,
    "C11": 1223.4,
    "N13": 597.9,
    "O15": 122.24,
    "I124": 360806.0,
    "RB82": 76.38,
    "Y86": 53064.0,
    "I123": 47602.0,
    "I131": 692928.0,
    "LU177": 574300.0,
}

_ELEMENTS = {
    "FLUORINE": "F",
    "GALLIUM": "GA",
    "ZIRCONIUM": "ZR",
    "COPPER": "CU",
    "INDIUM": "IN",
    "TECHNETIUM": "TC",
    "CARBON": "C",
    "NITROGEN": "N",
    "OXYGEN": "O",
    "IODINE": "I",
    "RUBIDIUM": "RB",
    "YTTRIUM": "Y",
    "LUTETIUM": "LU",
}

SUV_TYPES = ("bw", "lbm", "bsa", "ibw")
LBM_FORMULAS = ("janmahasatian", "james")
#: Unit of each SUV type.
SUV_UNITS = {"bw": "g/mL", "lbm": "g/mL", "bsa": "cm2/mL", "ibw": "g/mL"}

_COUNT_UNITS = ("CNTS", "PROPCNTS", "CPS", "PROPCPS")
_UNIT_SYNONYMS = {
    "BQML": ("BQML", 1.0),
    "BQ/ML": ("BQML", 1.0),
    "BQ/CC": ("BQML", 1.0),
    "KBQ/ML": ("BQML", 1e3),
    "KBQML": ("BQML", 1e3),
    "MBQ/ML": ("BQML", 1e6),
    "GML": ("GML", 1.0),
    "G/ML": ("GML", 1.0),
    "CM2ML": ("CM2ML", 1.0),
    "CM2/ML": ("CM2ML", 1.0),
    "CNTS": ("CNTS", 1.0),
    "COUNTS": ("CNTS", 1.0),
    "PROPCNTS": ("PROPCNTS", 1.0),
    "CPS": ("CPS", 1.0),
    "PROPCPS": ("PROPCPS", 1.0),
}
_SUVTYPE_CODES = {"BW": "bw", "BSA": "bsa", "LBM": "lbm", "IBW": "ibw"}

# Private tags (group, creator, element offset within the creator's block)
_PHILIPS = (0x7053, "Philips PET Private Group")
_PHILIPS_SUV_SCALE = 0x00  # (7053,1000) SUV Scale Factor
_PHILIPS_ACTIVITY_SCALE = 0x09  # (7053,1009) Activity Concentration Scale Factor
_GE = (0x0009, "GEMS_PETD_01")
_GE_SCAN_DATETIME = 0x0D  # (0009,100D) scan date-time

_SPECIES_SMALL = ("mouse", "mus ", "mus musculus", "rat", "rattus", "murine")


# ----------------------------------------------------------------------------- header model
@dataclass
class PetHeader:
    """The quantitative fields of a PET/SPECT header, with where each came from.

    Attributes
    ----------
    units : str
        Normalised DICOM Units code: BQML, GML, CM2ML, CNTS, PROPCNTS, CPS or PROPCPS.
    unit_scale : float
        Factor to the Units code (1000 for a sidecar in kBq/mL).
    modality : str
        "PT" or "NM".
    decay_correction : str
        START, ADMIN or NONE.
    dose_bq : float or None
        Injected activity at ``injection_time`` (Bq).
    injection_time, series_time, reference_time : datetime or None
        Injection; scan reference; the time the activity concentrations and
        the decayed dose refer to (the injection for ADMIN).
    half_life_s : float or None
    radionuclide : str or None
        Canonical nuclide key, e.g. "F18", "ZR89", "TC99M".
    weight_kg, height_m : float or None
    sex : str
        "M", "F" or "O" (unknown).
    suv_type_in_file : str or None
        For GML/CM2ML data: the SUV type of the stored values.
    philips_suv_scale, philips_activity_scale : float or None
        Philips private factors from the rescaled value to SUVbw and to Bq/mL.
    calibration_cps_per_mbq : float or None
        Counts-to-activity calibration for counts images (SPECT).
    acquisition_duration_s : float or None
        Duration used to turn counts into count rates.
    slice_times : list of datetime or None
        Start of the acquisition of each slice along axis 0 (DecayCorrection NONE).
    slice_durations_s : list of float or None
    corrected_image : list of str
    species : str or None
    warnings : list of str
        Every guess made (also emitted as ImmunotrackWarning).
    sources : dict
        Where each value came from (header tag, table, rule or "user").
    overrides : dict
        Values the user set, with the header value each replaced.
    """

    units: str | None = None
    unit_scale: float = 1.0
    modality: str = "PT"
    decay_correction: str | None = None
    dose_bq: float | None = None
    injection_time: _dt.datetime | None = None
    series_time: _dt.datetime | None = None
    reference_time: _dt.datetime | None = None
    half_life_s: float | None = None
    radionuclide: str | None = None
    weight_kg: float | None = None
    height_m: float | None = None
    sex: str = "O"
    suv_type_in_file: str | None = None
    philips_suv_scale: float | None = None
    philips_activity_scale: float | None = None
    calibration_cps_per_mbq: float | None = None
    acquisition_duration_s: float | None = None
    slice_times: list | None = None
    slice_durations_s: list | None = None
    corrected_image: list = field(default_factory=list)
    species: str | None = None
    #: why the weight could not be read (ambiguous unit), raised when a weight is needed
    weight_problem: str | None = None
    #: a measured lean body mass (qMR/DEXA), kg: SUVlbm of any species
    lean_mass_kg: float | None = None
    #: body surface area formula: "dubois" (humans) or "meeh" (k W^(2/3), animals)
    bsa_formula: str = "dubois"
    #: Meeh's constant k (cm2 g^-2/3): about 9.8 for mice
    meeh_k: float = 9.8
    warnings: list = field(default_factory=list)
    sources: dict = field(default_factory=dict)
    overrides: dict = field(default_factory=dict)
    problems: list = field(default_factory=list)
    #: record guesses without emitting them: a display helper in a worker thread, where
    #: ``warnings.catch_warnings`` is not thread-safe (left out of as_dict: not a header value)
    quiet: bool = field(default=False, repr=False, compare=False)

    # ------------------------------------------------------------- derived
    @property
    def decay_time_s(self) -> float | None:
        """Seconds from the injection to the reference time (0 for ADMIN)."""
        if self.decay_correction == "ADMIN":
            return 0.0
        if self.injection_time is None or self.reference_time is None:
            return None
        return (self.reference_time - self.injection_time).total_seconds()

    @property
    def decayed_dose_bq(self) -> float | None:
        """Injected activity decayed to the reference time (Bq)."""
        if self.dose_bq is None:
            return None
        dt = self.decay_time_s
        if dt is None:
            return None
        if dt == 0:
            return float(self.dose_bq)
        if not self.half_life_s:
            return None
        return float(self.dose_bq) * 2.0 ** (-dt / self.half_life_s)

    def warn(self, message: str) -> None:
        """Record a guess and show it (also emitted as ImmunotrackWarning).

        Parameters
        ----------
        message : str
            One line saying what was guessed and how to give the true value.

        Returns
        -------
        None

        Examples
        --------
        >>> import warnings
        >>> h = PetHeader()
        >>> with warnings.catch_warnings(record=True):
        ...     h.warn("PatientWeight 25 read as grams (a mouse).")
        >>> h.warnings
        ['PatientWeight 25 read as grams (a mouse).']
        """
        self.warnings.append(message)
        if not self.quiet:
            warnings.warn(message, ImmunotrackWarning, stacklevel=3)

    def as_dict(self) -> dict:
        """Plain JSON-able dictionary (for provenance and tables).

        Parameters
        ----------
        None

        Returns
        -------
        dict
            Every field (datetimes as ISO 8601 text) plus ``decay_time_s`` (s) and ``decayed_dose_bq`` (Bq).

        Examples
        --------
        >>> h = PetHeader(units="BQML", decay_correction="ADMIN", dose_bq=1e8, injection_time=_dt.datetime(2024, 1, 1, 9))
        >>> d = h.as_dict()
        >>> d["injection_time"], d["decay_time_s"], d["decayed_dose_bq"]
        ('2024-01-01T09:00:00', 0.0, 100000000.0)
        """
        out = {}
        for f in dataclasses.fields(self):
            if f.name == "quiet":
                continue  # how guesses are shown, not a header value
            value = getattr(self, f.name)
            if isinstance(value, _dt.datetime):
                value = value.isoformat()
            elif isinstance(value, list) and value and isinstance(value[0], _dt.datetime):
                value = [v.isoformat() for v in value]
            out[f.name] = value
        out["decay_time_s"] = self.decay_time_s
        out["decayed_dose_bq"] = self.decayed_dose_bq
        return out

    # --------------------------------------------------------- validation
    def require(self, suv_type: str | None = "bw", lbm_formula: str = "janmahasatian", need_dose: bool = True) -> None:
        """Raise InputError with the reason when these data cannot give Bq/mL or the SUV asked for.

        Parameters
        ----------
        suv_type : {"bw", "lbm", "bsa", "ibw"} or None, default "bw"
            The SUV asked for (None: activity concentration only).
        lbm_formula : {"janmahasatian", "james"}, default "janmahasatian"
            The lean-body-mass formula (SUVlbm).
        need_dose : bool, default True
            Also require the decayed dose (SUV, total activity and %ID need it).

        Returns
        -------
        None

        Raises
        ------
        InputError
            The first missing or contradictory value, with how to give it (units, calibration of
            counts, dose, times, half-life, weight, height, sex-dependent formula).

        Examples
        --------
        >>> h = PetHeader(units="BQML", decay_correction="ADMIN", dose_bq=1e8, weight_kg=70.0,
        ...               injection_time=_dt.datetime(2024, 1, 1, 9))
        >>> h.require("bw") is None
        True
        >>> PetHeader(units="BQML").require("bw")
        Traceback (most recent call last):
        ...
        napari_immunotrack.errors.InputError: the header has no injected dose (RadionuclideTotalDose (0018,1074)); ...
        """
        if self.problems:
            raise InputError(self.problems[0])
        if self.units is None:
            raise InputError(
                "the PET header has no Units (0054,1001); cannot tell Bq/mL from counts or SUV. "
                "Give a series with Units BQML, or set the units."
            )
        if self.units in _COUNT_UNITS and self.philips_activity_scale is None and self.philips_suv_scale is None:
            if not self.calibration_cps_per_mbq:
                raise InputError(
                    f"the image is in counts (Units {self.units}) and no calibration factor was given; "
                    "SPECT/PET counts need a calibration in cps/MBq (--calibration-cps-per-mbq)."
                )
            if self.units in ("CNTS", "PROPCNTS") and not self.acquisition_duration_s:
                raise InputError(
                    "the image is in counts but the acquisition duration is unknown "
                    "(ActualFrameDuration missing); give it (--acquisition-duration-s)."
                )
        needs_suv_inputs = (
            need_dose
            or suv_type is not None
            or self.units in ("GML", "CM2ML")
            or (
                self.units in _COUNT_UNITS
                and self.philips_activity_scale is None
                and self.philips_suv_scale is not None
            )
        )
        if needs_suv_inputs:
            if not self.dose_bq or self.dose_bq <= 0:
                raise InputError(
                    "the header has no injected dose (RadionuclideTotalDose (0018,1074)); "
                    "give it (--dose-mbq) to compute SUV, total activity and %ID."
                )
            if self.decay_correction != "ADMIN":
                if self.injection_time is None:
                    raise InputError(
                        "the header has no injection time (RadiopharmaceuticalStartDateTime/StartTime); "
                        "give it (--injection-time) to decay-correct the dose."
                    )
                if self.reference_time is None:
                    raise InputError(
                        "the header has no scan time (SeriesDate/SeriesTime or AcquisitionTime); "
                        "give it (--scan-time) to decay-correct the dose."
                    )
                if not self.half_life_s:
                    raise InputError(
                        "the radionuclide's half-life is unknown (no RadionuclideHalfLife and no known "
                        "Radionuclide); give it (--half-life-s)."
                    )
                if self.decay_time_s < 0:
                    raise InputError(
                        f"the injection ({self.injection_time.isoformat()}) is after the scan reference "
                        f"time ({self.reference_time.isoformat()}); the header times contradict each "
                        "other: fix them (--injection-time/--scan-time)."
                    )
        suv_types = [suv_type] if suv_type else []
        if self.units == "GML":
            suv_types.append(self.suv_type_in_file or "bw")
        if self.units == "CM2ML":
            suv_types.append("bsa")
        for t in suv_types:
            if (not self.weight_kg or self.weight_kg <= 0) and self.weight_problem:
                raise InputError(self.weight_problem)
            if not self.weight_kg or self.weight_kg <= 0:
                raise InputError(
                    "the header has no patient weight (PatientWeight (0010,1030)); give it "
                    "(--weight-kg) to compute SUV."
                )
            if t in ("lbm", "bsa", "ibw"):
                body_size(self, t, lbm_formula)  # refuses animals, a missing height, formulas out of range
        converted = self.suv_type_in_file if self.units == "GML" else None
        if (
            converted in ("lbm", "ibw")
            and self.sex not in ("M", "F")
            and not (converted == "lbm" and self.lean_mass_kg)
        ):
            raise InputError(
                f"the pixel values are SUV{converted} (Units GML, SUVType {converted.upper()}), whose "
                "formula depends on sex, and PatientSex (0010,0040) is missing; give it (--sex M or F)."
            )


# ----------------------------------------------------------------------------- parsing helpers
def _text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = "\\".join(str(v) for v in value)
    text = str(value).strip()
    return text or None


def _number(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        if len(value) == 0:
            return None
        value = value[0]
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


# the package's one DICOM date/time parser (issue 16): imported, not written twice
from ..io.dicom.headers import parse_dicom_date, parse_dicom_datetime, parse_dicom_time  # noqa: E402,F401


def nuclide_key(text) -> str | None:
    """Canonical key ("F18", "ZR89", "TC99M", ...) of a nuclide name such as '^18^Fluorine', 'F-18', '89Zr'.

    Element names are replaced by their symbols, punctuation dropped, and mass number and symbol put
    in the order of :data:`HALF_LIVES_S`'s keys (symbol, mass number, "M" for a metastable state).

    Parameters
    ----------
    text : str or None
        A nuclide as written in a DICOM header (CodeMeaning of RadionuclideCodeSequence), a BIDS
        sidecar or by a user.

    Returns
    -------
    str or None
        The key, or None when ``text`` is empty or not a nuclide name.

    Examples
    --------
    >>> nuclide_key("^18^Fluorine"), nuclide_key("89Zr"), nuclide_key("Tc-99m"), nuclide_key("water")
    ('F18', 'ZR89', 'TC99M', None)
    """
    text = _text(text)
    if not text:
        return None
    s = re.sub(r"[^A-Z0-9]", "", text.upper())
    for name in sorted(_ELEMENTS, key=len, reverse=True):
        s = s.replace(name, _ELEMENTS[name])
    m = re.fullmatch(r"(\d+)(M?)([A-Z]{1,2})", s) or None
    if m:
        key = f"{m.group(3)}{m.group(1)}{m.group(2)}"
    else:
        m = re.fullmatch(r"([A-Z]{1,2})(\d+)(M?)", s)
        if not m:
            return None
        key = f"{m.group(1)}{m.group(2)}{m.group(3)}"
    return key


class _Fields:
    """Look up DICOM keywords in a Volume's metadata: plain keys, then the pydicom header."""

    _RADIOPHARM = (
        "RadionuclideTotalDose",
        "RadiopharmaceuticalStartDateTime",
        "RadiopharmaceuticalStartTime",
        "RadionuclideHalfLife",
        "RadionuclideCodeSequence",
        "Radiopharmaceutical",
        "RadionuclidePositronFraction",
    )

    def __init__(self, metadata: dict):
        self.meta = metadata or {}
        self.ds = self.meta.get("dicom_header")
        seq = self.meta.get("RadiopharmaceuticalInformationSequence")
        self.radio_dict = seq[0] if isinstance(seq, list) and seq and isinstance(seq[0], dict) else {}
        self.radio_ds = None
        if self.ds is not None:
            s = getattr(self.ds, "RadiopharmaceuticalInformationSequence", None)
            if s:
                self.radio_ds = s[0]

    @staticmethod
    def _empty(value) -> bool:
        return (
            value is None
            or (isinstance(value, str) and not value.strip())
            or (hasattr(value, "__len__") and not isinstance(value, str) and len(value) == 0)
        )

    def get(self, keyword: str):
        """(value, source) of ``keyword``; (None, None) when absent."""
        value = self.meta.get(keyword)
        if not self._empty(value):
            return value, keyword
        if keyword in self._RADIOPHARM:
            value = self.radio_dict.get(keyword)
            if not self._empty(value):
                return value, keyword
            if self.radio_ds is not None:
                value = getattr(self.radio_ds, keyword, None)
                if not self._empty(value):
                    return value, keyword
        if self.ds is not None:
            value = getattr(self.ds, keyword, None)
            if not self._empty(value):
                return value, keyword
        return None, None

    def private(self, group: int, creator: str, offset: int, meta_key: str):
        """A private element by creator (falls back to block 0x10 when the creator was stripped)."""
        value = self.meta.get(meta_key)
        if not self._empty(value):
            return value, meta_key
        ds = self.ds
        if ds is None:
            return None, None
        try:
            elem = ds.get_private_item(group, offset, creator)
            if elem is not None and not self._empty(elem.value):
                return elem.value, f"({group:04X},{0x1000 + offset:04X}) {creator}"
        except (KeyError, ValueError):
            pass
        tag = (group << 16) | (0x1000 + offset)
        if tag in ds and not self._empty(ds[tag].value):
            return ds[tag].value, f"({group:04X},{0x1000 + offset:04X}) without private creator"
        return None, None


def _private_number(value) -> float | None:
    """Private numeric values may come as numbers, strings or raw little-endian doubles/floats."""
    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
        try:
            if len(raw) == 8:
                return float(np.frombuffer(raw, "<f8")[0])
            if len(raw) == 4:
                return float(np.frombuffer(raw, "<f4")[0])
            return _number(raw.decode("ascii").strip("\x00 "))
        except (ValueError, UnicodeDecodeError):
            return None
    return _number(value)


def _as_datetime_override(value, default_date: _dt.date | None) -> _dt.datetime:
    """A user-given time: datetime, ISO date-time, DICOM DT, or a time of day on ``default_date``."""
    if isinstance(value, _dt.datetime):
        return value.replace(tzinfo=None)
    text = str(value).strip()
    if re.fullmatch(r"\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?|\d{4,6}(\.\d+)?", text):
        if default_date is None:
            raise InputError(
                f"time {text!r} has no date and the header has none; give a full date-time (YYYY-MM-DDTHH:MM:SS)."
            )
        t = parse_dicom_time(text.zfill(5) if ":" in text and len(text.split(":")[0]) == 1 else text)
        return _dt.datetime.combine(default_date, t)
    return parse_dicom_datetime(text)


# ----------------------------------------------------------------------------- read the header
def read_pet_header(
    volume: Volume,
    *,
    dose_bq: float | None = None,
    dose_mbq: float | None = None,
    weight_kg: float | None = None,
    height_m: float | None = None,
    height_cm: float | None = None,
    sex: str | None = None,
    injection_time=None,
    scan_time=None,
    half_life_s: float | None = None,
    decay_correction: str | None = None,
    units: str | None = None,
    calibration_cps_per_mbq: float | None = None,
    acquisition_duration_s: float | None = None,
    weight_unit: str = "auto",
    species: str | None = None,
    lean_mass_kg: float | None = None,
    bsa_formula: str = "auto",
    meeh_k: float | None = None,
    quiet: bool = False,
) -> PetHeader:
    """Parse the quantitative PET/SPECT header of ``volume``, with optional user overrides.

    ``species`` replaces PatientSpeciesDescription; ``lean_mass_kg`` is a measured lean
    mass (qMR/DEXA) for SUVlbm; ``bsa_formula`` "auto" (Du Bois for humans, Meeh for animals
    only when asked), "dubois" or "meeh" with ``meeh_k`` (cm2 g^-2/3, default 9.8 for mice).

    Parameters
    ----------
    volume : Volume
        A PET/SPECT Volume from :func:`napari_immunotrack.io.load_volume` (DICOM,
        or NIfTI with a JSON sidecar of the same DICOM keywords).
    dose_bq, dose_mbq : float, optional
        Injected activity (overrides RadionuclideTotalDose).
    weight_kg, height_m, height_cm, sex : optional
        Patient overrides.
    injection_time, scan_time : datetime or str, optional
        ISO 8601 date-time, DICOM DT, or a time of day (on the scan date).
        ``scan_time`` sets the reference time of START-corrected data.
    half_life_s : float, optional
    decay_correction : {"START", "ADMIN", "NONE"}, optional
    units : str, optional
        Units code overriding the header (e.g. "BQML").
    calibration_cps_per_mbq : float, optional
        Calibration of counts images (SPECT).
    acquisition_duration_s : float, optional
        Duration of a counts acquisition (overrides ActualFrameDuration).
    weight_unit : {"auto", "kg", "g"}
        How to read PatientWeight; "auto" applies the rule in the module docstring.
    species : str, optional
        Replaces PatientSpeciesDescription (e.g. "Mus musculus"; docs/methods/pet.md#weight).
    lean_mass_kg : float, optional
        A measured lean body mass (qMR/DEXA, kg): SUVlbm of any species.
    bsa_formula : {"auto", "dubois", "meeh"}
        "auto": Du Bois for humans (Meeh for animals only when asked); "meeh" uses ``k W^(2/3)``.
    meeh_k : float, optional
        Meeh's constant k (cm2 g^-2/3; 9.8 for mice by default).
    quiet : bool
        Record every guess in ``warnings`` without emitting an ImmunotrackWarning (for display code
        running in a worker thread, where silencing by ``warnings.catch_warnings`` is not thread-safe).

    Returns
    -------
    PetHeader
        Never raises for missing values (a header panel can show them);
        :meth:`PetHeader.require` refuses what cannot give the numbers asked for.
        Malformed dates/times and contradictions do raise InputError.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_immunotrack.volume import Volume
    >>> import warnings
    >>> v = Volume(np.ones((2, 2, 2)), np.eye(4), "PT", metadata={"Units": "BQML", "RadionuclideTotalDose": 185})
    >>> with warnings.catch_warnings(record=True):
    ...     h = read_pet_header(v)
    >>> h.dose_bq, h.sources["dose_bq"]
    (185000000.0, 'RadionuclideTotalDose (0018,1074) read as MBq (value < 1e4)')
    """
    f = _Fields(volume.metadata)
    h = PetHeader()
    h.quiet = quiet
    h.modality = str(volume.modality or f.get("Modality")[0] or "PT")

    # ---- units
    raw_units, src = f.get("Units")
    if units is not None:
        h.overrides["units"] = {"value": units, "header": _text(raw_units)}
        raw_units, src = units, "user"
    if raw_units is None and volume.unit and volume.unit.upper().replace(" ", "") in _UNIT_SYNONYMS:
        raw_units, src = volume.unit, "Volume.unit"
    if raw_units is not None:
        key = str(raw_units).strip().upper().replace(" ", "")
        if key not in _UNIT_SYNONYMS:
            h.problems.append(
                f"the image's Units are {raw_units!r}, which this tool cannot turn into activity "
                "(BQML, GML, CM2ML, CNTS with Philips scale factors or a calibration, CPS); "
                "convert the image to Bq/mL or set the units."
            )
        else:
            h.units, h.unit_scale = _UNIT_SYNONYMS[key]
            h.sources["units"] = src

    # ---- correction flags
    corrected, _ = f.get("CorrectedImage")
    if corrected is not None:
        parts = (_text(corrected) or "").replace(",", "\\").split("\\")
        h.corrected_image = [c.strip().upper() for c in parts if c.strip()]
    dc, src = f.get("DecayCorrection")
    if dc is None and "ImageDecayCorrected" in volume.metadata:  # BIDS PET
        dc, src = ("START" if volume.metadata.get("ImageDecayCorrected") else "NONE"), "ImageDecayCorrected (BIDS)"
    if decay_correction is not None:
        h.overrides["decay_correction"] = {"value": decay_correction, "header": _text(dc)}
        dc, src = decay_correction, "user"
    if dc is not None:
        dc = str(dc).strip().upper()
        if dc not in ("START", "ADMIN", "NONE"):
            h.problems.append(
                f"DecayCorrection is {dc!r}; only START, ADMIN and NONE are defined. Fix the header "
                "or set --decay-correction."
            )
        h.decay_correction = dc
        h.sources["decay_correction"] = src
    else:
        h.decay_correction = "NONE" if "DECY" not in h.corrected_image and h.corrected_image else "START"
        h.sources["decay_correction"] = "assumed"
        if h.units not in _COUNT_UNITS:
            h.warn(
                f"the header has no DecayCorrection (0054,1102); assumed {h.decay_correction}"
                f"{' (CorrectedImage lacks DECY)' if h.decay_correction == 'NONE' else ''}."
            )
    if h.corrected_image and "decay_correction" not in h.overrides:
        has_decy = "DECY" in h.corrected_image
        if h.decay_correction in ("START", "ADMIN") and not has_decy:
            h.problems.append(
                f"contradictory header: DecayCorrection is {h.decay_correction} but CorrectedImage "
                f"({'/'.join(h.corrected_image)}) lacks DECY; set --decay-correction to say "
                "which is right."
            )
        if h.decay_correction == "NONE" and has_decy:
            h.problems.append(
                "contradictory header: DecayCorrection is NONE but CorrectedImage includes DECY; "
                "set --decay-correction to say which is right."
            )
    if h.corrected_image and "ATTN" not in h.corrected_image and h.modality == "PT":
        h.warn(
            f"CorrectedImage ({'/'.join(h.corrected_image)}) lacks ATTN: the image is not attenuation-corrected "
            "and its activity values are not quantitative."
        )

    # ---- SUV type of GML / CM2ML data
    if h.units == "GML":
        st, _ = f.get("SUVType")
        code = (_text(st) or "").upper()
        if code in _SUVTYPE_CODES:
            h.suv_type_in_file = _SUVTYPE_CODES[code]
            h.sources["suv_type_in_file"] = "SUVType (0054,1006)"
        elif code:
            h.problems.append(
                f"the image is SUV of type {code!r} (SUVType), which cannot be converted; use a Bq/mL series."
            )
        else:
            h.suv_type_in_file = "bw"
            h.sources["suv_type_in_file"] = "assumed"
            h.warn("Units GML without SUVType (0054,1006): the values are assumed to be SUVbw.")
    elif h.units == "CM2ML":
        h.suv_type_in_file = "bsa"
        h.sources["suv_type_in_file"] = "Units CM2ML"

    # ---- Philips private scale factors
    value, src = f.private(_PHILIPS[0], _PHILIPS[1], _PHILIPS_ACTIVITY_SCALE, "PhilipsActivityConcentrationScaleFactor")
    if _private_number(value):
        h.philips_activity_scale = _private_number(value)
        h.sources["philips_activity_scale"] = src
    value, src = f.private(_PHILIPS[0], _PHILIPS[1], _PHILIPS_SUV_SCALE, "PhilipsSUVScaleFactor")
    if _private_number(value):
        h.philips_suv_scale = _private_number(value)
        h.sources["philips_suv_scale"] = src

    # ---- SPECT calibration / duration
    if calibration_cps_per_mbq is not None:
        if not calibration_cps_per_mbq > 0:
            raise InputError(f"the calibration factor must be positive (got {calibration_cps_per_mbq} cps/MBq).")
        h.calibration_cps_per_mbq = float(calibration_cps_per_mbq)
        h.sources["calibration_cps_per_mbq"] = "user"
    if acquisition_duration_s is not None:
        if not acquisition_duration_s > 0:
            raise InputError(f"the acquisition duration must be positive (got {acquisition_duration_s} s).")
        h.acquisition_duration_s = float(acquisition_duration_s)
        h.sources["acquisition_duration_s"] = "user"
    else:
        dur, src = f.get("ActualFrameDuration")
        if _number(dur):
            h.acquisition_duration_s = _number(dur) / 1000.0
            h.sources["acquisition_duration_s"] = "ActualFrameDuration (0018,1242)"
        elif _number(volume.metadata.get("FrameDuration")):
            fd = volume.metadata.get("FrameDuration")
            h.acquisition_duration_s = float(fd[0] if isinstance(fd, list) else fd)
            h.sources["acquisition_duration_s"] = "FrameDuration (BIDS, s)"

    # ---- patient
    header_species = _text(f.get("PatientSpeciesDescription")[0]) or _text(volume.metadata.get("Species"))
    if species is not None:
        h.overrides["species"] = {"value": species, "header": header_species}
        h.sources["species"] = "user"
    h.species = species if species is not None else header_species
    if lean_mass_kg is not None:
        if not lean_mass_kg > 0:
            raise InputError(f"the lean mass must be positive (got {lean_mass_kg} kg).")
        h.lean_mass_kg = float(lean_mass_kg)
        h.sources["lean_mass_kg"] = "user (measured)"
    if bsa_formula not in ("auto", "dubois", "meeh"):
        raise InputError(f"bsa_formula must be auto, dubois or meeh (got {bsa_formula!r}).")
    h.bsa_formula = "dubois" if bsa_formula == "auto" else bsa_formula
    if meeh_k is not None:
        if not meeh_k > 0:
            raise InputError(f"Meeh's constant must be positive (got {meeh_k}).")
        h.meeh_k = float(meeh_k)
    _read_weight(h, f, volume.metadata, weight_kg, weight_unit)
    _read_height(h, f, height_m, height_cm)
    raw_sex, _ = f.get("PatientSex")
    if sex is not None:
        h.overrides["sex"] = {"value": sex, "header": _text(raw_sex)}
        raw_sex = sex
        h.sources["sex"] = "user"
    s = (_text(raw_sex) or "").upper()[:1]
    h.sex = s if s in ("M", "F") else "O"
    if "sex" not in h.sources:
        h.sources["sex"] = "PatientSex (0010,0040)" if s in ("M", "F") else "unknown"

    # ---- nuclide and half-life
    _read_half_life(h, f, volume.metadata, half_life_s)

    # ---- dose
    _read_dose(h, f, volume.metadata, dose_bq, dose_mbq)

    # ---- times
    _read_times(h, f, volume, injection_time, scan_time)
    return h


def _read_weight(h: PetHeader, f: _Fields, meta: dict, weight_kg, weight_unit: str) -> None:
    if weight_kg is not None:
        if not weight_kg > 0:
            raise InputError(f"the weight must be positive (got {weight_kg} kg).")
        header_w = _number(f.get("PatientWeight")[0])
        h.overrides["weight_kg"] = {"value": float(weight_kg), "header": header_w}
        h.weight_kg = float(weight_kg)
        h.sources["weight_kg"] = "user"
        return
    raw, src = f.get("PatientWeight")
    w = _number(raw)
    unit = weight_unit
    if w is None and _number(meta.get("BodyWeight")):  # BIDS
        w = _number(meta.get("BodyWeight"))
        src = "BodyWeight (BIDS)"
        unit = str(meta.get("BodyWeightUnits", "kg")).strip().lower() if weight_unit == "auto" else weight_unit
        if unit not in ("kg", "g"):
            h.problems.append(f"BodyWeightUnits {unit!r} is not kg or g; fix the sidecar or give --weight-kg.")
            return
    if w is None or w <= 0:
        return
    if unit == "g":
        w, note = w / 1000.0, "grams (weight_unit='g')"
    elif unit == "kg":
        note = "kg"
    elif unit == "auto":
        small = h.species is not None and any(k in h.species.lower() + " " for k in _SPECIES_SMALL)
        if w > 1000:
            h.warn(
                f"PatientWeight {w:g} is not a plausible weight in kg; taken as grams ({w / 1000:g} kg). "
                "Give --weight-kg if this is wrong."
            )
            w, note = w / 1000.0, "grams (value > 1000)"
        elif small and w > 2:
            h.warn(
                f"PatientWeight {w:g} for a {h.species} is not plausible in kg; taken as grams "
                f"({w / 1000:g} kg). Give --weight-kg if this is wrong."
            )
            w, note = w / 1000.0, "grams (mouse/rat weight > 2)"
        else:
            human = h.species is not None and any(k in h.species.lower() for k in _HUMAN)
            size = _number(f.get("PatientSize")[0])
            tall = size is not None and (_HUMAN_MIN_HEIGHT_M <= size <= 3.0 or 50.0 <= size <= 300.0)
            if w >= 2 and not human and not tall and h.species is None:
                # 25 is a 25 kg child or a 25 g mouse: a factor of 1000 in every SUV (docs/methods/pet.md#weight)
                h.weight_problem = (
                    f"PatientWeight {w:g} has no unit that can be trusted (no species, no human "
                    "height): give --weight-unit kg or g (or --weight-kg), or set "
                    "PatientSpeciesDescription (0010,2201)."
                )
                h.sources["weight_kg"] = f"{src}: ambiguous unit (refused)"
                return
            note = (
                "kg"
                if w < 2
                else ("kg (human species)" if human else "kg (human height)" if tall else "kg (species given)")
            )
            if w > 300:
                h.warn(f"PatientWeight {w:g} kg is implausibly high; check it.")
    else:
        raise InputError(f"weight_unit must be 'auto', 'kg' or 'g', not {weight_unit!r}.")
    h.weight_kg = float(w)
    h.sources["weight_kg"] = f"{src} read as {note}"


def _read_height(h: PetHeader, f: _Fields, height_m, height_cm) -> None:
    if height_cm is not None:
        height_m = float(height_cm) / 100.0
    if height_m is not None:
        if not height_m > 0:
            raise InputError(f"the height must be positive (got {height_m} m).")
        h.overrides["height_m"] = {"value": float(height_m), "header": _number(f.get("PatientSize")[0])}
        h.height_m = float(height_m)
        h.sources["height_m"] = "user"
        return
    raw, src = f.get("PatientSize")
    size = _number(raw)
    if size is None or size <= 0:
        return
    if size > 3:
        h.warn(f"PatientSize {size:g} is not a plausible height in m; taken as cm ({size / 100:g} m).")
        h.height_m = size / 100.0
        h.sources["height_m"] = "PatientSize (0010,1020) read as cm (value > 3)"
    else:
        h.height_m = size
        h.sources["height_m"] = "PatientSize (0010,1020)"


def _read_half_life(h: PetHeader, f: _Fields, meta: dict, half_life_s) -> None:
    names = []
    code_seq, _ = f.get("RadionuclideCodeSequence")
    if code_seq is not None:
        item = code_seq[0] if isinstance(code_seq, (list, tuple)) or hasattr(code_seq, "__getitem__") else code_seq
        try:
            meaning = item.get("CodeMeaning") if isinstance(item, dict) else getattr(item, "CodeMeaning", None)
        except (IndexError, KeyError, TypeError):
            meaning = None
        names.append(meaning)
    for key in ("Radionuclide", "TracerRadionuclide", "Radiopharmaceutical"):
        value = meta.get(key) if key != "Radiopharmaceutical" else f.get(key)[0]
        if value is None and key == "Radionuclide":
            value = f.get(key)[0]
        names.append(value)
    for name in names:
        key = nuclide_key(name)
        if key:
            h.radionuclide = key
            h.sources["radionuclide"] = str(_text(name))
            break
    table = HALF_LIVES_S.get(h.radionuclide) if h.radionuclide else None
    raw, src = f.get("RadionuclideHalfLife")
    header_value = _number(raw)
    if half_life_s is not None:
        if not half_life_s > 0:
            raise InputError(f"the half-life must be positive (got {half_life_s} s).")
        h.overrides["half_life_s"] = {"value": float(half_life_s), "header": header_value}
        h.half_life_s = float(half_life_s)
        h.sources["half_life_s"] = "user"
        return
    if header_value is not None and header_value > 0:
        if table and abs(header_value - table) / table > 0.05:
            h.problems.append(
                f"contradictory header: RadionuclideHalfLife {header_value:g} s does not match "
                f"{h.radionuclide} ({table:g} s); give the right one (--half-life-s)."
            )
        h.half_life_s = header_value
        h.sources["half_life_s"] = "RadionuclideHalfLife (0018,1075)"
    elif table:
        h.half_life_s = table
        h.sources["half_life_s"] = f"table value for {h.radionuclide}"
        h.warn(f"the header has no RadionuclideHalfLife; used {table:g} s for {h.radionuclide}.")


def _read_dose(h: PetHeader, f: _Fields, meta: dict, dose_bq, dose_mbq) -> None:
    raw, src = f.get("RadionuclideTotalDose")
    header_dose = _number(raw)
    if dose_mbq is not None:
        dose_bq = float(dose_mbq) * 1e6
    if dose_bq is not None:
        if not dose_bq > 0:
            raise InputError(f"the injected dose must be positive (got {dose_bq} Bq).")
        h.overrides["dose_bq"] = {"value": float(dose_bq), "header": header_dose}
        h.dose_bq = float(dose_bq)
        h.sources["dose_bq"] = "user"
        return
    unit = "Bq"
    if header_dose is None and _number(meta.get("InjectedRadioactivity")):  # BIDS
        header_dose = _number(meta.get("InjectedRadioactivity"))
        unit = str(meta.get("InjectedRadioactivityUnits", "MBq")).strip()
        src = f"InjectedRadioactivity (BIDS, {unit})"
        factor = {"bq": 1.0, "kbq": 1e3, "mbq": 1e6, "gbq": 1e9, "mci": 3.7e7, "uci": 3.7e4}.get(unit.lower())
        if factor is None:
            h.problems.append(f"InjectedRadioactivityUnits {unit!r} is not Bq, kBq, MBq, GBq or mCi; fix the sidecar.")
            return
        h.dose_bq = header_dose * factor
        h.sources["dose_bq"] = src
        return
    if header_dose is None or header_dose <= 0:
        return
    if header_dose < 1e4:
        h.warn(
            f"RadionuclideTotalDose {header_dose:g} is too small for Bq; taken as MBq "
            f"({header_dose * 1e6:.4g} Bq). Give --dose-mbq if this is wrong."
        )
        h.dose_bq = header_dose * 1e6
        h.sources["dose_bq"] = "RadionuclideTotalDose (0018,1074) read as MBq (value < 1e4)"
    else:
        h.dose_bq = header_dose
        h.sources["dose_bq"] = "RadionuclideTotalDose (0018,1074)"


def _slice_times(f: _Fields, volume: Volume, series_date):
    """Per-slice acquisition starts (datetime) and durations (s) along axis 0, or (None, None)."""
    rows = volume.metadata.get("slice_headers")
    starts, durations = [], []
    if isinstance(rows, list) and rows:
        for row in rows:
            date = parse_dicom_date(row.get("AcquisitionDate")) or series_date
            time = parse_dicom_time(row.get("AcquisitionTime"))
            if time is None or date is None:
                starts = []
                break
            starts.append(_dt.datetime.combine(date, time))
            durations.append((_number(row.get("ActualFrameDuration")) or 0.0) / 1000.0)
        if starts:
            return starts, durations
    # one acquisition time for the whole volume (NIfTI sidecar or a single-frame header)
    adt = parse_dicom_datetime(f.get("AcquisitionDateTime")[0])
    if adt is None:
        time = parse_dicom_time(f.get("AcquisitionTime")[0])
        date = parse_dicom_date(f.get("AcquisitionDate")[0]) or series_date
        adt = _dt.datetime.combine(date, time) if (time is not None and date is not None) else None
    if adt is None:
        return None, None
    dur = _number(f.get("ActualFrameDuration")[0])
    dur = dur / 1000.0 if dur else (_number(volume.metadata.get("FrameDuration")) or 0.0)
    return [adt], [dur]


def _read_times(h: PetHeader, f: _Fields, volume: Volume, injection_time, scan_time) -> None:
    series_date = parse_dicom_date(f.get("SeriesDate")[0])
    series_tm = parse_dicom_time(f.get("SeriesTime")[0])
    if series_date is None:
        series_date = parse_dicom_date(f.get("AcquisitionDate")[0]) or parse_dicom_date(f.get("StudyDate")[0])
    series_dt = _dt.datetime.combine(series_date, series_tm) if (series_date and series_tm) else None
    h.series_time = series_dt
    starts, durations = _slice_times(f, volume, series_date)
    if starts is not None and len(starts) not in (1, volume.spatial_shape[0]):
        starts, durations = [min(starts)], [max(durations)]
    earliest = min(starts) if starts else None
    ge_raw, ge_src = f.private(_GE[0], _GE[1], _GE_SCAN_DATETIME, "GEScanDateTime")
    ge_dt = None
    if ge_raw is not None:
        ge_text = ge_raw.decode("ascii", "ignore").strip("\x00 ") if isinstance(ge_raw, bytes) else ge_raw
        ge_dt = parse_dicom_datetime(ge_text)
    scan_date_default = series_date or (earliest.date() if earliest else None)

    # ---- reference time of the values
    if scan_time is not None:
        ref = _as_datetime_override(scan_time, scan_date_default)
        h.overrides["scan_time"] = {"value": ref.isoformat(), "header": series_dt.isoformat() if series_dt else None}
        ref_src = "user"
    elif h.decay_correction == "NONE":
        ref = earliest or series_dt
        ref_src = "earliest AcquisitionTime" if earliest else "SeriesDate/SeriesTime"
    elif series_dt is not None and (earliest is None or series_dt <= earliest + _dt.timedelta(seconds=1)):
        ref, ref_src = series_dt, "SeriesDate/SeriesTime"
    elif ge_dt is not None:
        ref, ref_src = ge_dt, f"GE private scan date-time {ge_src}"
    elif earliest is not None:
        ref, ref_src = earliest, "earliest AcquisitionDate/AcquisitionTime"
        if series_dt is not None:
            h.warn(
                f"SeriesTime ({series_dt.time()}) is later than the first AcquisitionTime ({earliest.time()}) "
                "(a post-processed series?); the dose is decayed to the first acquisition instead."
            )
        else:
            h.warn("the header has no SeriesTime; the dose is decayed to the first AcquisitionTime.")
    else:
        ref, ref_src = None, None
    if h.decay_correction == "NONE":
        h.slice_times = starts
        h.slice_durations_s = durations
        if starts and all(d == 0 for d in durations):
            h.warn("DecayCorrection NONE without ActualFrameDuration: the decay during each frame is not corrected.")

    # ---- injection
    inj_dt_raw, _ = f.get("RadiopharmaceuticalStartDateTime")
    inj_tm_raw, _ = f.get("RadiopharmaceuticalStartTime")
    if injection_time is not None:
        inj = _as_datetime_override(injection_time, scan_date_default)
        h.overrides["injection_time"] = {"value": inj.isoformat(), "header": _text(inj_dt_raw) or _text(inj_tm_raw)}
        inj_src = "user"
        if ref is not None and inj > ref and re.fullmatch(r"[\d:.]+", str(injection_time).strip()):
            inj -= _dt.timedelta(days=1)
            h.warn(
                f"the injection time {injection_time} is after the scan time; taken as the day before "
                "(injection before midnight)."
            )
    else:
        inj_dt = parse_dicom_datetime(inj_dt_raw)
        inj_tm = parse_dicom_time(inj_tm_raw)
        inj, inj_src = None, None
        if inj_dt is not None:
            inj, inj_src = inj_dt, "RadiopharmaceuticalStartDateTime (0018,1078)"
            if (
                inj_tm is not None
                and abs(_seconds_of_day(inj_dt.time()) - _seconds_of_day(inj_tm)) > 1.0
                and abs(abs(_seconds_of_day(inj_dt.time()) - _seconds_of_day(inj_tm)) - 86400) > 1.0
            ):
                h.problems.append(
                    f"contradictory header: RadiopharmaceuticalStartDateTime ({inj_dt.time()}) and "
                    f"RadiopharmaceuticalStartTime ({inj_tm}) disagree; give the injection time "
                    "(--injection-time)."
                )
        elif inj_tm is not None:
            day = ref.date() if ref is not None else scan_date_default
            if day is not None:
                inj = _dt.datetime.combine(day, inj_tm)
                inj_src = "RadiopharmaceuticalStartTime (0018,1072) on the scan date"
                if ref is not None and inj > ref:
                    inj -= _dt.timedelta(days=1)
                    inj_src = "RadiopharmaceuticalStartTime (0018,1072) on the day before the scan"
                    h.warn(
                        f"RadiopharmaceuticalStartTime {inj_tm} is after the scan time {ref.time()}; the injection "
                        "is taken as the day before (before midnight)."
                    )
    h.injection_time = inj
    if inj_src:
        h.sources["injection_time"] = inj_src
    if h.decay_correction == "ADMIN":
        # values are decay-corrected to the administration: that is their reference time
        h.reference_time = inj
        h.sources["reference_time"] = "injection (DecayCorrection ADMIN)"
    else:
        h.reference_time = ref
        if ref_src:
            h.sources["reference_time"] = ref_src
    dt = h.decay_time_s
    if dt is not None and h.half_life_s and dt > 20 * h.half_life_s:
        h.warn(f"the scan is {dt / h.half_life_s:.1f} half-lives after the injection; check the times and nuclide.")


def _seconds_of_day(t: _dt.time) -> float:
    return t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6


# ----------------------------------------------------------------------------- species
_HUMAN = ("human", "homo sapiens", "homo")
#: Small animals have no PatientSize in metres close to a human's: a height of at least this says "human".
_HUMAN_MIN_HEIGHT_M = 0.5


def is_non_human(header: PetHeader) -> bool:
    """True for an animal: a non-human species in the header, or a body weight under 2 kg.

    A species that names a human ("human", "Homo sapiens") is human; any other species is an animal.
    Without a species, a weight under 2 kg is an animal (docs/methods/pet.md#weight).

    Parameters
    ----------
    header : PetHeader
        Parsed header (``species``, ``weight_kg``).

    Returns
    -------
    bool
        True for an animal; False for a human or when neither species nor weight tell.

    Examples
    --------
    >>> is_non_human(PetHeader(weight_kg=0.025)), is_non_human(PetHeader(weight_kg=70.0, species="Homo sapiens"))
    (True, False)
    >>> is_non_human(PetHeader(weight_kg=0.3, species="Rattus norvegicus")), is_non_human(PetHeader())
    (True, False)
    """
    species = (header.species or "").strip().lower()
    if species:
        return not any(species.startswith(k) or k in species for k in _HUMAN)
    return header.weight_kg is not None and 0 < header.weight_kg < 2.0


# ----------------------------------------------------------------------------- body size
def body_size(header: PetHeader, suv_type: str = "bw", lbm_formula: str = "janmahasatian") -> float:
    """The normaliser of an SUV type: weight (g), BSA (cm2), LBM (g) or IBW (g).

    Formulas in docs/methods/pet.md#body-size: Du Bois BSA ``0.007184 W^0.425 H[cm]^0.725`` m2 (or
    Meeh's ``k W[g]^(2/3)`` cm2 when ``header.bsa_formula`` is "meeh"); James or Janmahasatian lean body
    mass, or the measured ``header.lean_mass_kg``; Devine's ideal body weight. Unknown sex averages the
    male and female formulas. Human formulas are refused for animals (:func:`is_non_human`).

    Parameters
    ----------
    header : PetHeader
        Parsed header: ``weight_kg``, and for the human formulas ``height_m`` and ``sex``.
    suv_type : {"bw", "lbm", "bsa", "ibw"}, default "bw"
        SUV type whose normaliser is wanted.
    lbm_formula : {"janmahasatian", "james"}, default "janmahasatian"
        Lean-body-mass formula (SUVlbm without a measured lean mass).

    Returns
    -------
    float
        Body weight, lean body mass or ideal body weight in grams, or body surface area in cm2.

    Raises
    ------
    InputError
        A missing weight or height, a human formula for an animal, an unknown formula, or a formula
        outside its range (a non-positive result).

    Examples
    --------
    >>> h = PetHeader(weight_kg=70.0, height_m=1.75, sex="M")
    >>> body_size(h, "bw")
    70000.0
    >>> round(body_size(h, "bsa"))   # Du Bois, cm2
    18481
    >>> round(body_size(h, "lbm", "james") / 1000, 2)
    56.52
    """
    suv_type = normalise_suv_type(suv_type)
    w = header.weight_kg
    if (not w or w <= 0) and header.weight_problem:
        raise InputError(header.weight_problem)
    if not w or w <= 0:
        raise InputError("SUV needs the patient weight, which is missing; give it (--weight-kg).")
    if suv_type == "bw":
        return w * 1000.0
    if suv_type == "lbm" and header.lean_mass_kg:
        return float(header.lean_mass_kg) * 1000.0  # measured (qMR/DEXA): any species
    if suv_type == "bsa" and header.bsa_formula == "meeh":
        return float(header.meeh_k) * (w * 1000.0) ** (2.0 / 3.0)  # Meeh: cm2 from grams
    if is_non_human(header):
        what = header.species or f"a {w * 1000:g} g animal"
        alternative = {
            "lbm": "a measured lean mass (qMR/DEXA: --lean-mass-g)",
            "bsa": "Meeh's BSA k W^(2/3) (--bsa-formula meeh; k about 9.8 for mice, --meeh-k)",
            "ibw": "SUVbw, or a measured lean mass (--suv lbm --lean-mass-g)",
        }[suv_type]
        raise InputError(
            f"SUV{suv_type} uses human formulas (height, sex) that do not apply to {what}; use "
            f"{alternative} instead (docs/methods/pet.md#body-size)."
        )
    h_m = header.height_m
    if not h_m or h_m <= 0:
        raise InputError(
            f"SUV{suv_type} needs the patient height (PatientSize (0010,1020)), which is missing; "
            "give it (--height-cm) or use --suv bw."
        )
    h_cm = h_m * 100.0
    if suv_type == "bsa":
        return 0.007184 * w**0.425 * h_cm**0.725 * 1e4
    sexes = [header.sex] if header.sex in ("M", "F") else ["M", "F"]
    values = []
    for s in sexes:
        if suv_type == "lbm":
            if lbm_formula == "james":
                lbm = 1.10 * w - 128 * (w / h_cm) ** 2 if s == "M" else 1.07 * w - 148 * (w / h_cm) ** 2
            elif lbm_formula == "janmahasatian":
                bmi = w / h_m**2
                lbm = 9270 * w / (6680 + 216 * bmi) if s == "M" else 9270 * w / (8780 + 244 * bmi)
            else:
                raise InputError(f"lbm_formula must be one of {LBM_FORMULAS}, not {lbm_formula!r}.")
            values.append(lbm)
        else:  # ibw, Devine
            h_in = h_cm / 2.54
            values.append((50.0 if s == "M" else 45.5) + 2.3 * (h_in - 60.0))
    value = float(np.mean(values))
    if value <= 0:
        raise InputError(
            f"the {suv_type.upper()} formula gives {value:.3g} kg for weight {w:g} kg and height "
            f"{h_m:g} m (outside the formula's range); use --suv bw."
        )
    return value * 1000.0


def normalise_suv_type(suv_type: str) -> str:
    """The SUV normalisation key of ``suv_type`` (case-insensitive, an "suv" prefix allowed).

    Parameters
    ----------
    suv_type : str
        E.g. "bw", "SUVlbm", "bsa" (see :data:`SUV_TYPES`).

    Returns
    -------
    str
        The lower-case key, one of :data:`SUV_TYPES`.

    Raises
    ------
    InputError
        Not a known SUV type.

    Examples
    --------
    >>> normalise_suv_type("SUVbw")
    'bw'
    """
    t = str(suv_type).lower().removeprefix("suv")
    if t not in SUV_TYPES:
        raise InputError(f"SUV type must be one of {', '.join(SUV_TYPES)}, not {suv_type!r}.")
    return t
