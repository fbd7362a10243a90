"""The session pipeline over a whole cohort, headless, in parallel and resumable (no napari).

A *pipeline file* (YAML) says which steps run, with which parameters, on
which files of each subject and session::

    name: car-t-tracking
    subjects: "sub-*"             # subject folders of the cohort folder
    sessions: "ses-*"             # session folders of a subject (null: the subject folder is the session)
    baseline_session: auto        # the pre-injection session (auto: the one whose name says day 0)
    inputs:                       # glob patterns relative to a session folder (defaults shown in
      T2starw: anat/*_T2starw.nii.gz   # pipeline.DEFAULT_INPUT_PATTERNS; give only what differs)
    steps:                        # any of register, clusters, confirm, pet, spect, f19, mpi
      register: {transform: rigid}
      clusters: {method: fraction, threshold: 0.5}
      mpi: {iron_per_cell_pg: 5.0}

Each step's parameters are the keyword arguments of its analysis function
(:func:`~napari_immunotrack.registration.register`,
:func:`~napari_immunotrack.analysis.clusters.segment_clusters`,
:func:`~napari_immunotrack.analysis.confirm.confirm_dual_mode`,
:func:`~napari_immunotrack.analysis.pet.quantify_pet` for pet and spect,
:func:`~napari_immunotrack.analysis.fluorine.fluorine_cells`,
:func:`~napari_immunotrack.analysis.mpi.mpi_iron`), checked against their
signatures before any work starts (an unknown step or parameter is named
with its line). Steps always run in the order above.

:func:`run_batch` makes one task per (subject, session) on a Dask cluster (a
``LocalCluster`` by default, or any running scheduler by its address). Each
task hashes its inputs, skips itself when ``done.json`` in its output folder
holds the same input and parameter hashes, else runs
:func:`~napari_immunotrack.pipeline.analyse_inputs` and writes its outputs
into a temporary folder renamed into place (so a killed run leaves finished
folders and nothing half-written). A failing task is reported and the others
go on. At the end the per-task tables are concatenated into the cohort
tables (``cohort.csv``: one row per subject, session and site) and figures.

Output folder::

    OUT/batch.json, pipeline.yaml            what ran (the pipeline and its hash)
    OUT/sub-01/ses-day1/                     one task: labels, tables, transforms, done.json
    OUT/cohort.csv                           one row per subject, session and site (organ)
    OUT/cohort_<table>.csv                   every per-task table, concatenated (pet, f19, clusters, ...)
    OUT/cohort_<readout>.png                 per-site time courses (mean ± SD over subjects)
    OUT/failures.csv                         one row per failed task or step

Modules: :mod:`.config` (pipeline files and step parameters), :mod:`.tasks`
(finding and running one task), :mod:`.run` (output folder, cluster,
:func:`run_batch`), :mod:`.cohort` (cohort tables and figures). Every public name
of the former ``batch.py`` module is importable from here.
"""

from ..pipeline import BASELINE_ROLES, DEFAULT_INPUT_PATTERNS, STEP_EXTRAS, STEPS
from .cohort import COHORT_COLUMNS, COHORT_FIGURES, TASK_TABLES, bids_label, cohort_figures, cohort_tables
from .config import (
    PIPELINE_KEYS,
    Pipeline,
    load_pipeline,
    parse_pipeline,
    pipeline_from_settings,
    step_models,
    step_parameters,
    step_schema,
)
from .run import MANIFEST, BatchSummary, check_output_dir, connect, run_batch
from .tasks import find_tasks, input_hashes, is_visible, limit_threads, run_task, task_folder

__all__ = [
    "BASELINE_ROLES",
    "DEFAULT_INPUT_PATTERNS",
    "STEP_EXTRAS",
    "STEPS",
    "PIPELINE_KEYS",
    "COHORT_COLUMNS",
    "COHORT_FIGURES",
    "TASK_TABLES",
    "MANIFEST",
    "Pipeline",
    "BatchSummary",
    "step_parameters",
    "step_models",
    "step_schema",
    "parse_pipeline",
    "load_pipeline",
    "pipeline_from_settings",
    "find_tasks",
    "task_folder",
    "input_hashes",
    "run_task",
    "check_output_dir",
    "connect",
    "cohort_tables",
    "cohort_figures",
    "run_batch",
    "bids_label",
    "is_visible",
    "limit_threads",
]

# old private names (tests and scripts written before the split use them)
_limit_threads, _label, _visible = limit_threads, bids_label, is_visible
