"""Records: how data_prep.build_records turns a cohort folder into ArrayRecord shards.

    python -m data_prep.build_records --input=COHORT_DIR --out=RECORDS_DIR [--config=configs/records.py]
        [--config.workers=2 ...] [--secret_file=PATH]

The plan values (spacing, grids, mask dilation, clipping) are spinejax.scans.preprocess.Plan's; the defaults
are sized for the CPU preset (whole spine 16 x 192 x 48 voxels at 4 mm). `--config=configs/records.py:paper`
gives the paper-scale plan for GPUs and TPUs: 4 mm between sagittal slices and 1 mm in plane, the whole
spine on 16 x 768 x 256 voxels (the paper's slab is 14 x 793 x 384). `:rows_2mm` keeps the CPU preset's plan
but samples 2 mm along the spine (whole spine 16 x 384 x 48).
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.spacing_mm = (4.0, 4.0, 4.0)  # slices L->R, rows S->I, columns A->P
    config.grids = ml_collections.ConfigDict({
        # Sized from the synthetic cohort's fingerprint (manifest.json, data_fingerprint): the 95th
        # percentile of each region's extent fits with room to spare.
        "whole": (16, 192, 48), "cervical": (16, 48, 32), "thoracic": (16, 96, 48), "lumbar": (16, 72, 48)})
    config.mask_dilation_mm = 4.0
    config.clip_percentiles = (0.5, 99.5)
    config.crop_margin_mm = 12.0
    # A whole-spine sagittal slab has 11-17 slices of 3-4 mm; fewer than this cannot cover the spine from side
    # to side (one- and two-slice "series" are scouts or exports gone wrong).
    config.min_slices = 8
    # A region whose mask lacks more than this share of its vertebrae and discs is refused for that region
    # (a lumbar-only scan is not a whole-spine record); each record lists the levels it has.
    config.max_missing_level_share = 0.25
    config.regions = ("whole", "cervical", "thoracic", "lumbar")
    config.split_fractions = (0.8, 0.1, 0.1)  # train, validation, test; by subject (data_prep/splits.py)
    # The site's own split instead: a CSV of subject_id,split naming every subject once ...
    config.split_file = ""
    # ... or sites held out as the test split (external validation), as written in reports.csv's site column
    # (their codes when site_codes is set); the other sites' subjects are split between train and validation.
    config.test_sites = ()
    config.shards_per_split = 4  # files per region and split; a record's shard comes from its series key
    config.max_oblique_deg = 30.0  # slice normals further than this from left-right are not sagittal
    config.max_cropped_share = 0.05  # a region whose grid crops the anatomy of more records than this: warned
    config.workers = 0  # 0: all cores
    # The cohort schema (spinejax/cohort/schema.py, docs/cohort_schema.md): which reports columns are read and
    # what their values mean. '': COHORT_DIR/cohort_schema.yaml (or .yml, .json) when there is one, else
    # spinejax's own column names with no exposures.
    config.schema_file = ""
    if arg == "paper":
        config.spacing_mm = (4.0, 1.0, 1.0)
        config.grids = ml_collections.ConfigDict({
            "whole": (16, 768, 256), "cervical": (16, 192, 160), "thoracic": (16, 384, 224),
            "lumbar": (16, 288, 256)})
    elif arg == "rows_2mm":
        # The CPU preset's plan with 2 mm along the spine (superior-inferior), where disc height is measured:
        # twice the voxels. At study scale it took the CPU preset's CNN from 4.51 to 4.30 pooled validation and
        # test MAE (README "Study scale"), at about 1.6x the training time; ./run.sh study builds it.
        config.spacing_mm = (4.0, 2.0, 4.0)
        config.grids = ml_collections.ConfigDict({
            "whole": (16, 384, 48), "cervical": (16, 96, 32), "thoracic": (16, 192, 48), "lumbar": (16, 144, 48)})
    elif arg:
        raise ValueError(f"unknown records preset {arg!r}; use configs/records.py, configs/records.py:paper or "
                         "configs/records.py:rows_2mm")
    return config
