"""Normal-spine eligibility: which cases hold only age-related degeneration (the paper's training cohort).

    python -m data_prep.eligibility --input=COHORT_DIR --out=DIR [--config=configs/eligibility.py]
        [--config.umap.n_neighbors=30 ...]

Each value is a choice the paper leaves open; data_prep/eligibility.py documents why each default.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    # 'region_at_least' (levels per condition, region and severity-or-worse), 'raw' (grades per level) or
    # 'both'; see data_prep/pathology_features.py.
    # The cohort schema: '' reads COHORT_DIR/cohort_schema.yaml (or .yml, .json) when there is one (the same as
    # the records stage; docs/cohort_schema.md).
    config.schema_file = ""
    config.features = "region_at_least"
    config.min_grade = 2  # leave out mild findings (1): see data_prep/normal_spines.py
    config.metric = "canberra"
    config.seed = 0

    config.umap = ml_collections.ConfigDict()
    # Smaller than the groups to be found (at the paper's scale a 2% pattern is about 350 people), so a
    # distinct pattern's neighbourhood is its own kind and it embeds as an island.
    config.umap.n_neighbors = 30
    config.umap.min_dist = 0.0  # packed clusters: the embedding is for clustering, not only for looking
    config.umap.n_components = 2  # HDBSCAN clusters exactly the picture people look at
    config.umap.n_epochs = 200

    config.hdbscan = ml_collections.ConfigDict()
    config.hdbscan.min_cluster_fraction = 0.003  # smallest cluster: 0.3% of cases ...
    config.hdbscan.min_cluster_size_floor = 8  # ... and never fewer than this many
    config.hdbscan.min_samples = 10
    config.hdbscan.cluster_selection_method = "eom"
    # Clusters closer than this in the embedding (UMAP units) are one: EOM otherwise cuts the age
    # continuum of normal spines into density ripples, each rare by the 15% rule.
    config.hdbscan.cluster_selection_epsilon = 0.8

    # The 15% rule. rarity 'pattern': a cluster is common, so age-related, when its pattern (the findings at
    # least `pattern_prevalence` of its members have) is held by at least `common_threshold` of the people of
    # its members' ages ('age_band', each band weighted by the members in it) or of everyone ('everyone').
    # rarity 'headcount': when the cluster itself holds at least `common_threshold` of the cases of at least
    # one age band, or of everyone (the paper's wording read literally). Where UMAP happens to cut the
    # continuum of ordinary spines moves a headcount, not a pattern's prevalence: data_prep/normal_spines.py.
    config.rarity = "pattern"
    config.pattern_prevalence = 0.5
    config.common_threshold = 0.15
    config.threshold_population = "age_band"
    config.age_bands = (25, 35, 45, 55, 65, 75, 85)  # band edges, years; the last edge is exclusive
    # Embed and cluster each age band on its own: within a band, age-related burden is alike and what
    # sets a spine apart is its pattern.
    config.stratify_by_age_band = False

    # HDBSCAN noise: 'ineligible' (the paper's rule), or 'nearest' (a noise case joins the cluster most
    # of its `noise_neighbours` nearest clustered cases belong to, and is eligible if that one is common).
    # With cluster_selection_epsilon, HDBSCAN leaves almost no noise (none on the synthetic cohorts of
    # 3,000 and 17,394 people), so the paper's rule costs nothing.
    # No common cluster at all (a small pilot cohort): 'all_valid' keeps every valid row, with a warning;
    # 'paper' applies the rule anyway (no one eligible). See data_prep/normal_spines.py.
    config.small_cohort_policy = "all_valid"
    config.noise_policy = "ineligible"
    config.noise_neighbours = 10
    return config
