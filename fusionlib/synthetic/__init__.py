"""The synthetic cohort generator: the embedded default dataset, with known ground truth.

:func:`generate_cohort` writes a folder in the study's own formats (the clinical
table, ``bounding_box_thermal.csv`` and a ``Thermal_Map_IMG/`` folder of PNGs) plus
a ``cohort.json`` describing how it was made, so the default run goes through
:func:`fusionlib.data.load_cohort` exactly like real data.

How a cohort is drawn
---------------------
* **Structure.** Each patient has 1..``max_appointments`` visits (``Appt#`` 0, 1, ...)
  and 1 ulcer, or 2 with probability ``second_ulcer_fraction`` (the second ulcer
  appears at a random visit). A case is one (patient, appointment, ulcer).
* **Labels.** Every ulcer has a latent healing progress that grows with each
  visit (random start, random positive rate). Cases are ranked by progress and
  the lowest ``class_mix[0]`` share is I, the next ``class_mix[1]`` is P, the rest
  R: the marginal mix is hit exactly and phases never go backwards within an
  ulcer (I -> P -> R).
* **Class signal.** Both modalities share fixed class directions in a 2-d latent
  space, ``d_I = (-1, -0.35)``, ``d_P = (0, 0.6)``, ``d_R = (1, -0.35)`` (axis 0:
  healing progress; axis 1: what sets P apart), centred on their ``class_mix``-
  weighted mean, so I and R lie further apart than I and P (ordinal structure).
  A case of class ``c`` gets the modality latent ``s[c] * d_c + N(0, 0.5^2)`` per
  axis, with ``s = clinical_signal`` or ``image_signal``.
* **Signal 0 means no signal for that class.** A case of a class with ``s[c] = 0``
  draws its latent as if it belonged to one of the classes with non-zero signal,
  picked at random in proportion to ``class_mix`` (a separate random stream), so in
  that modality the class is distributed exactly like the other classes taken
  together: its Bayes one-vs-rest AUC is 0.5. (Before generator version 2 it sat
  at the origin of the centred directions, which is not the average of the others:
  ``clinical_weak_for_R`` was not blind to R, Bayes R AUC ~0.92.) With fewer than two
  non-zero classes no class can differ from the rest, so every case sits at the
  origin (``(2, 0, 0)`` carries no signal, like ``(0, 0, 0)``).
* **Shared visit effect.** ``shared_effect`` (in [0, 1), default 0) is the share of
  the case-level noise variance common to the clinical and the image latent of the
  same case (same visit, same camera and thermometer): their noises correlate by
  ``shared_effect`` per axis, each modality's own spread is unchanged, so
  single-modality accuracy does not move but fusion gains less than under
  independence. ``shared_patient_share`` (in [0, 1], default 0) of the common part
  is fixed per patient instead of per visit. At 0 (default) the two latents are
  drawn independently: the modalities are conditionally independent given the
  label.
* **Clinical table.** The informative columns are the clinical latent (linear
  loadings) plus per-column noise, put on the column's real scale (wound and
  peri-ulcer temperatures -- I warm, R cool --, exudate amount and appearance,
  wound score, erythema, edema, maceration, pain). The other columns (age,
  weight, sex, side, foot aspect, location, diabetes type, heart conditions,
  onset, appointment days, intact skin temperature, offloading) are drawn
  independently of the label, including the time columns: ``Appt Days`` is the
  gap since the previous visit and ``Onset (Days)`` is fixed per ulcer, so no
  column leaks the visit order. Values are missing completely at random
  (2-20 % depending on the column). ``Healing Phase`` and ``Phase Confidence
  (%)`` are written as in the study (they leak the label; the loader drops them).
* **Thermal maps.** Per image (1-3 angles per case, ``no_image_fraction`` of cases
  have none) a foot-shaped skin temperature field (patient-level skin
  temperature, cooler toes, smooth random blobs, ambient background) gets an
  elliptical wound whose wound-vs-skin contrast is ``-1.5 * v0`` degC (I hot, R
  cool), whose size grows as ``exp(-0.15 * v0)`` and whose peri-wound rim is
  ``0.9 * v1`` degC warmer, ``v`` being the image latent plus a per-image
  jitter; then sensor noise, and viridis over 18..36 degC. Boxes are the
  wound ellipse's bounding box (``Xmax``/``Ymax`` exclusive) with +/-1 px
  annotation jitter.

Every generated file is a deterministic function of ``(preset, knobs,
random_state)``: the same seed gives byte-identical CSVs and PNGs. The labels,
the clinical noise, the image noise, the decoy classes of zero signals and the
shared visit effect come from separate random streams, so presets that differ only
in their signals share labels and structure for one seed (paired comparisons), and
a cohort without zero signals or shared effect is byte-identical to what generator
version 1 wrote (only ``clinical_weak_for_R``'s table changed in version 2).

Where each part lives
---------------------
* :mod:`.presets` -- :data:`DEFAULT_KNOBS`, :data:`PRESETS` (and the table of their
  measured ground truth), :func:`resolve_knobs`, :data:`GENERATOR_VERSION`;
* :mod:`.latents` -- structure, labels and the two case latents (:func:`class_means`,
  :func:`decoy_classes`, :func:`cohort_latents`);
* :mod:`.table` -- the clinical table and its CSV bytes;
* :mod:`.rendering` -- the thermal maps and their PNG bytes;
* :mod:`.storage` -- :func:`generate_cohort` (the folder, written aside and swapped into
  place), the default cohort's location and staleness check;
* :mod:`.real_images` -- :func:`synthesize_thermal_images`: synthetic thermal maps for
  the REAL clinical table (dataset ``real_synthetic_images``).
"""

from .latents import class_means, cohort_latents, decoy_classes
from .presets import (DEFAULT_KNOBS, DEFAULT_PRESET, DEFAULT_SEED, GENERATOR_VERSION, PRESETS,
                      resolve_knobs)
from .real_images import (REAL_SYNTHETIC_NAME, REAL_SYNTHETIC_VERSION,
                          ensure_real_synthetic_cohort, real_synthetic_dir,
                          synthesize_thermal_images)
from .storage import default_cohort_dir, ensure_default_cohort, generate_cohort

__all__ = [
    "DEFAULT_KNOBS", "DEFAULT_PRESET", "DEFAULT_SEED", "GENERATOR_VERSION", "PRESETS",
    "REAL_SYNTHETIC_NAME", "REAL_SYNTHETIC_VERSION", "class_means", "cohort_latents",
    "decoy_classes", "default_cohort_dir", "ensure_default_cohort",
    "ensure_real_synthetic_cohort", "generate_cohort", "real_synthetic_dir", "resolve_knobs",
    "synthesize_thermal_images",
]
