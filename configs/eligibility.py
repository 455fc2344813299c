"""Normal-spine eligibility: which cases hold only age-related degeneration (the paper's training cohort).

    python -m data_prep.eligibility --input=COHORT_DIR --out=DIR [--config=configs/eligibility.py]
        [--config.umap.n_neighbors=30 ...]

Each value is a choice the paper leaves open; data_prep/eligibility.py documents why each default.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    # 'region_severity' (81 counts), 'raw' (207 grades) or 'both'; see data_prep/pathology_features.py.
    config.features = "region_severity"
    config.metric = "canberra"
    config.seed = 0

    config.umap = ml_collections.ConfigDict()
    config.umap.n_neighbors = 100  # wide neighbourhoods keep the age continuum of normal spines whole
    config.umap.min_dist = 0.0  # packed clusters: the embedding is for clustering, not only for looking
    config.umap.n_components = 2  # HDBSCAN clusters exactly the picture people look at
    config.umap.n_epochs = 200

    config.hdbscan = ml_collections.ConfigDict()
    config.hdbscan.min_cluster_fraction = 0.02  # smallest cluster: 2% of cases ...
    config.hdbscan.min_cluster_size_floor = 8  # ... and never fewer than this many
    config.hdbscan.min_samples = 10
    config.hdbscan.cluster_selection_method = "eom"

    # A cluster is common, so age-related, when it holds at least `common_threshold` of the cases of at
    # least one age band ('age_band'), or of everyone ('everyone', the paper's wording read literally).
    config.common_threshold = 0.15
    config.threshold_population = "age_band"
    config.age_bands = (25, 35, 45, 55, 65, 75, 85)  # band edges, years; the last edge is exclusive
    # Embed and cluster each age band on its own: within a band, age-related burden is alike and what
    # sets a spine apart is its pattern.
    config.stratify_by_age_band = False

    # HDBSCAN noise: 'ineligible' (the paper's rule), or 'nearest' (a noise case joins the cluster most
    # of its `noise_neighbours` nearest clustered cases belong to, and is eligible if that one is common).
    # 'nearest' by default: on the synthetic cohort HDBSCAN calls 13-40% of cases noise, most of them normal
    # spines of middle age, and dropping them all cost more normal spines than it caught abnormal ones.
    config.noise_policy = "nearest"
    config.noise_neighbours = 10
    return config
