"""Pure analyses: Volumes and parameters in, Volumes and pandas tables out (no napari, no Qt, no file I/O).

One module per method; import the module you need (this package imports
nothing itself, so the modules stay independent):

- :mod:`.clusters` -- hypointense (iron) cluster segmentation on T2/T2*-weighted
  MRI: noise, normalisation, candidate rules, baseline confirmation, 3D
  components and a per-cluster table (``segment_clusters``).

Other analysis modules (T1-T2 confirmation, PET/SPECT quantification, 19F and
MPI counts, longitudinal tracking, ROI statistics) live beside it.
"""
