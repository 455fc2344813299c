"""Records: how data_prep.build_records turns a cohort folder into ArrayRecord shards.

    python -m data_prep.build_records --input=COHORT_DIR --out=RECORDS_DIR [--config=configs/records.py]
        [--config.workers=2 ...] [--secret_file=PATH]

The plan values (spacing, grids, mask dilation, clipping) are data_prep.preprocess.Plan's; the defaults
are sized for the CPU preset (whole spine 16 x 192 x 48 voxels at 4 mm).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.spacing_mm = (4.0, 4.0, 4.0)  # slices L->R, rows S->I, columns A->P
    config.grids = ml_collections.ConfigDict({
        # Sized from the synthetic cohort's fingerprint (manifest.json, data_fingerprint): the 95th
        # percentile of each region's extent fits with room to spare.
        "whole": (16, 192, 48), "cervical": (16, 48, 32), "thoracic": (16, 96, 48), "lumbar": (16, 72, 48)})
    config.mask_dilation_mm = 4.0
    config.clip_percentiles = (0.5, 99.5)
    config.crop_margin_mm = 12.0
    config.regions = ("whole", "cervical", "thoracic", "lumbar")
    config.split_fractions = (0.8, 0.1, 0.1)  # train, validation, test; by subject
    config.shards_per_split = 4  # files per region and split; a record's shard comes from its series key
    config.max_oblique_deg = 30.0  # slice normals further than this from left-right are not sagittal
    config.workers = 0  # 0: all cores
    # Columns of reports.csv copied, keyed by series, into RECORDS_DIR/reports.csv for the analysis: named
    # here so that no other column (a name, a date of birth) can slip through. Pathology grades
    # (<condition>__<level>), age, sex and site always go.
    config.report_columns = ("smoking", "physical_work", "coffee", "left_handed")
    return config
