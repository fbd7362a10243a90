"""Z-spectra from bmctool (an independent Bloch-McConnell simulator, MIT licence) for the CEST tests.

Uses bmctool's own 5-pool configuration file (3 T: water, amide 3.5 ppm, guanidine 2 ppm,
NOE -3 ppm, MT) and a continuous-wave block saturation written with pypulseq. A field
offset is simulated by shifting the saturation offsets (bmctool 1.0.3's ``b0_inhom`` moves
water and solute pools in opposite directions). Results are cached per process.
"""

from __future__ import annotations

import functools
from pathlib import Path

import bmctool  # the testing extra (never downloaded at test time): a missing one fails, not skips
import numpy as np
import pypulseq as pp
from bmctool.parameters import Parameters
from bmctool.parameters.CESTPool import CESTPool
from bmctool.simulation import BMCSim

CONFIG_5POOL = Path(bmctool.__file__).parent / "library" / "sim-library" / "config_5pool.yaml"
GAMMA_MHZ = 42.5764


def _sequence(offsets_ppm, b1_ut, tsat_s, field_t):
    system = pp.Opts(rf_ringdown_time=0, rf_dead_time=0, rf_raster_time=1e-6)
    seq = pp.Sequence(system=system)
    flip = b1_ut * 1e-6 * 2 * np.pi * GAMMA_MHZ * 1e6 * tsat_s
    adc = pp.make_adc(num_samples=1, duration=1e-3)
    for off in offsets_ppm:
        seq.add_block(
            pp.make_block_pulse(flip_angle=flip, duration=tsat_s, freq_offset=off * GAMMA_MHZ * field_t, system=system)
        )
        seq.add_block(pp.make_delay(1e-3))
        seq.add_block(adc)
    seq.set_definition("offsets_ppm", [float(o) for o in offsets_ppm])
    return seq


def parameters(drop=(), add=()):
    """bmctool's 5-pool parameters without the pools at the ``drop`` offsets (ppm), plus ``add`` pools
    given as (f, t1, t2, k, dw)."""
    params = Parameters.from_yaml(CONFIG_5POOL)
    params.cest_pools = [p for p in params.cest_pools if not any(abs(p.dw - d) < 1e-9 for d in drop)]
    for f, t1, t2, k, dw in add:
        params.cest_pools.append(CESTPool(f=f, t1=t1, t2=t2, k=k, dw=dw))
    return params


@functools.lru_cache(maxsize=64)
def z_spectrum(
    offsets_ppm: tuple,
    b0_shift_ppm: float = 0.0,
    b1_ut: float = 1.0,
    tsat_s: float = 2.0,
    drop: tuple = (),
    add: tuple = (),
) -> np.ndarray:
    """Z at the nominal ``offsets_ppm`` of a voxel whose water line sits at ``b0_shift_ppm``."""
    params = parameters(drop, add)
    field_t = float(params.system.b0)
    true_offsets = np.asarray(offsets_ppm, float) - b0_shift_ppm
    sim = BMCSim(params, _sequence(true_offsets, b1_ut, tsat_s, field_t), verbose=False)
    sim.run()
    _, mz = sim.get_zspec()
    return np.asarray(mz, float) / float(params.water_pool.f)
