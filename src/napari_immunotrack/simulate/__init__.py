"""A physics-based simulator of a labelled-cell mouse study (pure, seeded; no napari).

- :mod:`.phantom` : the synthetic mouse (solids, tissue labels, T1/T2/T2*/PD).
- :mod:`.mri` : spin-echo and gradient-echo signal equations, relaxivity, Rician noise.
- :mod:`.iron` : SPION-labelled clusters as magnetic dipoles; intravoxel dephasing ("blooming").
- :mod:`.nuclear` : PET/SPECT activity, decay, point spread, counting noise.
- :mod:`.fluorine` : 19F MRI depots and reference tube.
- :mod:`.mpi` : magnetic particle imaging with fiducials.
- :mod:`.optical` : surface-weighted fluorescence.
- :mod:`.timecourse` : migration, division, exocytosis, death and macrophage uptake over days.
- :mod:`.scenes` : small test scenes with known truth (for the analysis tests).
- :mod:`.study` : a whole study written to disk like a real one, with ``ground_truth.json``.

>>> from napari_immunotrack.simulate import cluster_scene
>>> scene = cluster_scene(seed=0)
>>> sorted(scene)[:3]
['background_mask', 'bloom_labels', 'post']
"""

from .scenes import cluster_scene, dual_mode_scene, quantitative_scene, registration_pair, rigid_matrix

__all__ = [
    "cluster_scene",
    "dual_mode_scene",
    "quantitative_scene",
    "registration_pair",
    "rigid_matrix",
    "make_study",
    "list_sample_files",
]


def __getattr__(name):
    # the study writer pulls in the DICOM/TIFF writers: import it only when asked
    if name in ("make_study", "list_sample_files", "simulate_timepoint"):
        from . import study

        return getattr(study, name)
    raise AttributeError(name)
