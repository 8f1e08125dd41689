"""Synthetic cardiac anatomy: a truncated prolate left ventricle in 3-D, rendered on any image plane.

All anatomy lives in an LV frame (millimetres): ``z`` along the long axis (apex -> base, 0 at the
end-diastolic base plane, negative toward the apex), ``u`` toward the septum / right ventricle and
``v`` toward the anterior wall. A slice is rendered by mapping its pixel grid into that frame, so
slice geometry (tilt, transposed images, any orientation) and image content always agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Minimum cavity radius (mm) for an LV blood pool to be "discernible": below it a slice is oap
# (paper section 2.2: out-of-apical = no appearance of the LV blood pool).
MIN_POOL_RADIUS_MM = 3.0


@dataclass(frozen=True)
class Heart:
    """One subject's heart at end-diastole plus how it contracts."""

    cavity_radius: float  # LV cavity radius at the base plane (mm)
    cavity_length: float  # base plane -> cavity apex (mm)
    wall: float  # lateral wall thickness (mm)
    apex_wall: float  # myocardium beyond the cavity apex (mm)
    descent: float  # through-plane motion of the base toward the apex at ES (mm)
    ef: float  # ejection fraction (0-1)
    pap_start: float  # papillary muscles start, as a fraction of the cavity length from its apex
    pap_end: float  # papillary muscles end (fraction)
    pap_radius: float  # papillary muscle radius (mm)
    pap_contrast: float  # 0 = as dark as myocardium, 1 = invisible in blood
    pap_angles: tuple[float, float]  # angular positions (rad) of the two papillary muscles
    rv_scale: float  # right-ventricle size relative to the LV
    blood: float  # blood-pool signal relative to myocardium (balanced SSFP: 3-5x)
    fat: float  # fat signal relative to myocardium
    crescent_height: float  # how far above the base the lateral myocardial crescent reaches (mm)
    body_shift: tuple[float, float]  # body-centre offset from the LV axis (mm, in u/v)


def sample_heart(rng: np.random.Generator) -> Heart:
    """Draw one subject's anatomy (sizes from adult cine MRI; EF 35-75 %)."""
    return Heart(
        cavity_radius=rng.uniform(19.0, 30.0),
        cavity_length=rng.uniform(58.0, 86.0),
        wall=rng.uniform(6.5, 11.5),
        apex_wall=rng.uniform(4.0, 8.0),
        descent=rng.uniform(7.0, 14.0),
        ef=rng.uniform(0.35, 0.75),
        pap_start=rng.uniform(0.31, 0.42),
        pap_end=rng.uniform(0.66, 0.76),
        pap_radius=rng.uniform(2.6, 4.6),
        pap_contrast=rng.uniform(0.0, 0.6),
        pap_angles=(
            float(np.deg2rad(rng.uniform(-150, -115))),
            float(np.deg2rad(rng.uniform(110, 140))),
        ),
        rv_scale=rng.uniform(0.9, 1.25),
        blood=rng.uniform(3.0, 5.0),
        fat=rng.uniform(2.2, 3.2),
        crescent_height=rng.uniform(5.0, 9.0),
        body_shift=(rng.uniform(-40, -20), rng.uniform(-45, -25)),
    )


@dataclass(frozen=True)
class HeartState:
    """The LV at one contraction state (phi = 0 at ED, 1 at ES)."""

    base_z: float
    apex_z: float  # cavity apex
    rc: float  # cavity radius at the base plane
    re: float  # epicardial radius at the base plane
    epi_apex_z: float

    @property
    def cavity_length(self) -> float:
        return self.base_z - self.apex_z


def heart_state(heart: Heart, phi: float) -> HeartState:
    """Contract the heart: the base descends, the cavity narrows so that ESV/EDV = 1 - EF.

    The apex stays almost still (through-plane motion is mostly basal), and myocardial volume is
    roughly conserved, so the wall thickens in systole.
    """
    base_z = -heart.descent * phi
    apex_z = -heart.cavity_length + 1.5 * phi
    length = base_z - apex_z
    # V ~ rc^2 * length for a half prolate spheroid: choose the ES radius that gives the EF.
    k = np.sqrt((1.0 - heart.ef) * heart.cavity_length / (heart.cavity_length - heart.descent + 1.5))
    rc = heart.cavity_radius * (1.0 - (1.0 - k) * phi)
    re0 = heart.cavity_radius + heart.wall
    myo_area0 = (re0**2 - heart.cavity_radius**2) * (heart.cavity_length + heart.apex_wall)
    re = float(np.sqrt(rc**2 + myo_area0 / (length + heart.apex_wall)))
    return HeartState(base_z=base_z, apex_z=apex_z, rc=float(rc), re=re, epi_apex_z=apex_z - heart.apex_wall)


def cavity_volume_ml(heart: Heart, phi: float) -> float:
    """LV cavity volume (mL) of the truncated half prolate spheroid, papillary muscles excluded."""
    s = heart_state(heart, phi)
    cavity = 2.0 / 3.0 * np.pi * s.rc**2 * s.cavity_length
    pap_len = (heart.pap_end - heart.pap_start) * s.cavity_length
    pap = 2 * np.pi * (heart.pap_radius * (1 + 0.3 * phi)) ** 2 * pap_len
    return float((cavity - pap) / 1000.0)


def _radius(z: np.ndarray | float, base_z: float, length: float, r_base: float) -> np.ndarray:
    """Radius of a prolate spheroid truncated at its equator (the base plane) at height z."""
    t = (base_z - np.asarray(z)) / length
    r = r_base * np.sqrt(np.clip(1 - t * t, 0, None))
    return np.where((t >= 0) & (t <= 1), r, 0.0).astype(np.asarray(z).dtype, copy=False)


def slice_label(heart: Heart, phi: float, z: float) -> str:
    """The paper's level (section 2.2) of a slice whose plane crosses the LV axis at height z."""
    s = heart_state(heart, phi)
    if z > s.base_z:
        return "obs"  # above the most basal slice with an LV blood pool
    if float(_radius(z, s.base_z, s.cavity_length, s.rc)) < MIN_POOL_RADIUS_MM:
        return "oap"  # no discernible LV blood pool
    frac = (z - s.apex_z) / s.cavity_length
    if frac < heart.pap_start:
        return "ap"
    if frac <= heart.pap_end:
        return "mid"  # papillary muscles present
    return "bs"


# Flow artefacts and atrial filling over the cycle (phi 0 at ED, 1 at ES): systolic signal loss in the aorta,
# the strength and offset of its phase-encoding ghost, and how much the atrial pool's radius grows.
FLOW_VOID = 0.35
GHOST_LEVEL = 0.25
GHOST_SHIFT_MM = 70.0
LA_FILLING = 0.4


def _rv_masks(heart: Heart, s: HeartState, phi: float, u: np.ndarray, v: np.ndarray,
              z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(RV wall, RV blood pool) masks: a crescent against the septum, shorter than the LV, contracting with it."""
    rv_r = _radius(z, s.base_z + 6.0, s.cavity_length - 6.0, s.re * heart.rv_scale * (1.0 - 0.25 * phi))
    has_rv = rv_r > 0
    du, ru, rv_ = u - s.re * 0.45 - 0.6 * rv_r, 1.0 * rv_r, 1.5 * rv_r
    wall = has_rv & ((du / (ru + 3.5)) ** 2 + (v / (rv_ + 3.5)) ** 2 < 1.0)
    pool = has_rv & ((du / (ru + 1e-6)) ** 2 + (v / (rv_ + 1e-6)) ** 2 < 1.0)
    return wall, pool


def _lv_radii(heart: Heart, s: HeartState, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(epicardial, cavity) radius of the LV at heights z."""
    return (_radius(z, s.base_z, s.cavity_length + heart.apex_wall, s.re),
            _radius(z, s.base_z, s.cavity_length, s.rc))


# Segmentation label values as ACDC writes them (its README: 1 RV cavity, 2 LV myocardium, 3 LV cavity).
SEG_RV, SEG_MYO, SEG_LV = 1, 2, 3


def segment(heart: Heart, phi: float, u: np.ndarray, v: np.ndarray, z: np.ndarray) -> np.ndarray:
    """The expert-style segmentation of the same anatomy render draws (uint8, ACDC label values): RV cavity,
    LV myocardium, LV cavity (papillary muscles inside it count as cavity, as in ACDC's contours)."""
    s = heart_state(heart, phi)
    seg = np.zeros(u.shape, dtype=np.uint8)
    seg[_rv_masks(heart, s, phi, u, v, z)[1]] = SEG_RV
    re, rc = _lv_radii(heart, s, z)
    rho2 = u * u + v * v
    seg[rho2 < re * re] = SEG_MYO
    seg[rho2 < rc * rc] = SEG_LV
    return seg


def render(heart: Heart, phi: float, u: np.ndarray, v: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Noise-free signal (myocardium = 1) at points (u, v, z) of the LV frame (float32 grids)."""
    s = heart_state(heart, phi)
    rho2 = u * u + v * v
    bu, bv = heart.body_shift
    img = np.zeros(u.shape, dtype=np.float32)

    # Body: an ellipse of soft tissue with a bright subcutaneous fat rim; lungs dark; spine posterior.
    bx, by = (u - bu) * (1 / 165.0), (v - bv) * (1 / 120.0)
    body_r = bx * bx + by * by
    inside = body_r < 1.0
    img[inside] = 1.1
    img[inside & (body_r > 0.86)] = heart.fat
    for cu, cv, au, av in ((bu + 85, bv + 10, 52, 75), (bu - 95, bv + 15, 48, 72)):
        img[((u - cu) * (1 / au)) ** 2 + ((v - cv) * (1 / av)) ** 2 < 1.0] = 0.08
    # Liver: toward the patient's right and inferior, so it fills the image below the apex.
    liver_top = s.epi_apex_z + 12.0
    img[(u > -20 + 0.8 * (z - liver_top)) & (z < liver_top) & (body_r < 0.86)] = 1.35
    # Descending aorta (posterior, beside the spine) and spine. Systolic flow dephases the aortic blood (its
    # signal drops) and pulsatile flow leaves a ghost of the vessel along the phase-encoding direction: the
    # flow artefacts that make a real cine change outside the ventricles too.
    aorta = (u + 5) ** 2 + (v + 62) ** 2 < 11.0**2
    img[aorta] = heart.blood * 0.95 * (1.0 - FLOW_VOID * phi)
    img[(u + 5) ** 2 + (v + 90) ** 2 < 16.0**2] = 0.7
    img[(u + 5) ** 2 + (v + 62 - GHOST_SHIFT_MM) ** 2 < 11.0**2] += GHOST_LEVEL * phi * heart.blood

    # Right ventricle: a crescent against the septum, shorter than the LV, contracting with it.
    rv_wall, rv_pool = _rv_masks(heart, s, phi, u, v, z)
    img[rv_wall] = 1.0
    img[rv_pool] = heart.blood * 0.93

    # Left atrium and aortic root above the base (what an obs slice shows beside the crescent);
    # the outflow tract reaches a little below the base plane, into basal slices.
    # The atrium fills while the ventricles empty (its pool grows toward ES), so above the base the blood-pool
    # area runs against the ventricles', as on real cine.
    la_r = s.rc * 0.85 * (1.0 + LA_FILLING * (phi - 0.5))
    img[((u + 6) ** 2 + (v + 16) ** 2 < la_r**2) & (z > s.base_z + 2.5)] = heart.blood * 0.9
    ao2 = (u - 9) ** 2 + (v - 13) ** 2
    high = z > s.base_z - 6.0
    img[(ao2 < 13.0**2) & high] = 1.0
    img[(ao2 < 11.0**2) & high] = heart.blood * 0.97 * (1.0 - FLOW_VOID * phi)

    # LV: epicardial fat, myocardium, blood pool.
    re, rc = _lv_radii(heart, s, z)
    img[(rho2 < (re + 2.0) ** 2) & (re > 0)] = heart.fat
    img[rho2 < re * re] = 1.0
    img[rho2 < rc * rc] = heart.blood
    # Basal lateral myocardium just above the base: a crescent that thins as it rises (obs).
    # "Lateral" = within +/- arc of the -u direction: -u > rho * cos(arc).
    above = z - s.base_z
    arc = np.deg2rad(75.0) * np.clip(1.0 - above / heart.crescent_height, 0.0, 1.0)
    lateral = -u > np.sqrt(rho2) * np.cos(arc)
    img[(above > 0) & (arc > 0) & lateral & (rho2 > (s.rc * 0.9) ** 2) & (rho2 < (s.re * 0.95) ** 2)] = 1.0

    # Papillary muscles: two dark islands attached to the wall, over the middle of the cavity.
    frac = (z - s.apex_z) / s.cavity_length
    in_pap = (frac >= heart.pap_start) & (frac <= heart.pap_end) & (rc > 0)
    if in_pap.any():
        pr = heart.pap_radius * (1.0 + 0.3 * phi)
        pap_level = 1.0 + heart.pap_contrast * (heart.blood - 1.0)
        dist = np.maximum(rc - 0.8 * pr, 0.0)
        for a in heart.pap_angles:
            pu, pv = dist * np.cos(a), dist * np.sin(a)
            img[in_pap & ((u - pu) ** 2 + (v - pv) ** 2 < pr * pr)] = pap_level
    return img
