"""Contrast phases on a non-contrast CT, from its TotalSegmentator labels (a training augmentation).

The demo model's only training CT (`totalsegmentator/example_ct`) is a non-contrast scan: liver about
45 HU, aorta about 40 HU. Most abdominal CTs users click into are contrast-enhanced, where vessels are
far brighter than the organs around them (portal-venous phase: aorta 150-200 HU, portal and splenic
vein 150-180 HU, liver and pancreas 100-120 HU, renal cortex 150-200 HU). A hyperdense lesion in an
enhanced pancreas then looks like the splenic vein beside it, which a model that never saw a bright
vessel takes for lesion. `enhance` raises each labelled structure by an amount drawn from the ranges
of one phase, so the training CT shows the phase's vessel/organ contrast; lesions are inserted after
it (their contrast is relative to the enhanced organ, `lesions.insert_lesion`).

The increments are typical values from the radiology literature for enhancement over unenhanced
attenuation (HU), not fitted to any volume of this project.
"""
from __future__ import annotations

import numpy as np

from .lesions import gaussian_blur

# TotalSegmentator label ids (labels_total.json) grouped by how they enhance
AORTA_ARTERIES = (52, 65, 66)                   # aorta, iliac arteries
PORTAL_SPLENIC = (64,)                          # portal vein and splenic vein
SYSTEMIC_VEINS = (63, 67, 68)                   # inferior vena cava, iliac veins
LIVER, SPLEEN, PANCREAS = (5,), (1,), (7,)
KIDNEYS = (2, 3)
ADRENALS = (8, 9)

# phase -> group -> (low, high) enhancement in HU
PHASES = {
    "arterial": {AORTA_ARTERIES: (180.0, 300.0), PORTAL_SPLENIC: (30.0, 90.0), SYSTEMIC_VEINS: (0.0, 40.0),
                 LIVER: (10.0, 30.0), SPLEEN: (40.0, 90.0), PANCREAS: (50.0, 100.0), KIDNEYS: (100.0, 180.0),
                 ADRENALS: (20.0, 60.0)},
    "portal-venous": {AORTA_ARTERIES: (90.0, 160.0), PORTAL_SPLENIC: (90.0, 150.0), SYSTEMIC_VEINS: (50.0, 110.0),
                      LIVER: (40.0, 70.0), SPLEEN: (50.0, 80.0), PANCREAS: (40.0, 80.0), KIDNEYS: (90.0, 160.0),
                      ADRENALS: (20.0, 50.0)},
    "delayed": {AORTA_ARTERIES: (40.0, 80.0), PORTAL_SPLENIC: (40.0, 80.0), SYSTEMIC_VEINS: (40.0, 80.0),
                LIVER: (20.0, 45.0), SPLEEN: (20.0, 45.0), PANCREAS: (15.0, 40.0), KIDNEYS: (60.0, 120.0),
                ADRENALS: (10.0, 30.0)},
}
PHASE_P = {"arterial": 0.25, "portal-venous": 0.55, "delayed": 0.2}


def enhance(volume: np.ndarray, labels: np.ndarray, rng: np.random.Generator, phase: str | None = None):
    """The volume (HU, float32) as one contrast phase would show it; `labels` on the same grid. The phase
    is drawn by PHASE_P (or given), one increment per structure group from that phase's range, edges
    softened by a 0.7-voxel blur (the labels' hard steps would be sharper than the scan's own edges)."""
    if phase is None:
        names = list(PHASE_P)
        phase = names[int(rng.choice(len(names), p=[PHASE_P[n] for n in names]))]
    lut = np.zeros(int(labels.max()) + 1, np.float32)
    for ids, (lo, hi) in PHASES[phase].items():
        inc = float(rng.uniform(lo, hi))
        for i in ids:
            if i < len(lut):
                lut[i] = inc
    delta = lut[labels.astype(np.intp)]
    if delta.any():
        delta = gaussian_blur(delta, 0.7)
    return volume.astype(np.float32) + delta
