"""The cohort data layer: one in-memory representation, and readers for the real formats.

* :mod:`.model` -- :class:`Cohort`, the labels, the image modalities (one
  :class:`Modality` record each, :data:`IMAGE_MODALITIES`), column lists and the
  study's file-name convention (:func:`case_id`, :func:`image_filename`, ...);
* :mod:`.problems` -- :class:`FolderProblems`, what a folder scan left out and why;
* :mod:`.readers` -- the CSV / bounding-box / image-folder readers and :func:`load_cohort`.

Every public name is re-exported here, so ``from fusionlib.data import X`` is the
way to use them. The synthetic cohort (:mod:`fusionlib.synthetic`) writes exactly
these formats, so the default run goes through the same loader as real data.
"""

from .model import (BBOX_COLUMNS, BBOX_FILENAMES, CATEGORICAL_FEATURES, CLINICAL_FILENAME,
                    DEFAULT_IMAGE_DIRS, FEATURES, FILENAME_PATTERN, FREE_TEXT_COLUMNS,
                    GENERATED_MODALITIES, IDENTIFIER_COLUMNS, IMAGE_COLUMNS, IMAGE_MODALITIES,
                    KEY_COLUMNS, LABEL_COLUMN, LABELS, LEAKING_COLUMNS, MODALITIES,
                    MODALITY_CAMERA, N_CLASSES, NUMERIC_FEATURES, Cohort, Modality, case_id,
                    file_digest, image_filename, parse_image_filename)
from .problems import DROPPED_KINDS, PROBLEM_KINDS, FolderProblems, dropped_images
from .readers import (COHORT_FILE, load_cohort, read_bounding_boxes, read_clinical_table,
                      read_cohort_stamp, read_csv_checked, scan_images)

__all__ = [
    "BBOX_COLUMNS", "BBOX_FILENAMES", "CATEGORICAL_FEATURES", "CLINICAL_FILENAME", "COHORT_FILE",
    "DEFAULT_IMAGE_DIRS", "DROPPED_KINDS", "FEATURES", "FILENAME_PATTERN", "FREE_TEXT_COLUMNS",
    "GENERATED_MODALITIES", "IDENTIFIER_COLUMNS", "IMAGE_COLUMNS", "IMAGE_MODALITIES",
    "KEY_COLUMNS", "LABEL_COLUMN", "LABELS", "LEAKING_COLUMNS", "MODALITIES", "MODALITY_CAMERA",
    "N_CLASSES", "NUMERIC_FEATURES", "PROBLEM_KINDS", "Cohort", "FolderProblems", "Modality",
    "case_id", "dropped_images", "file_digest", "image_filename",
    "load_cohort", "parse_image_filename", "read_bounding_boxes", "read_clinical_table",
    "read_cohort_stamp", "read_csv_checked", "scan_images",
]
