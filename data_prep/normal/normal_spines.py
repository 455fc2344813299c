"""Finds spines with only age-related degeneration: Canberra distance -> UMAP -> HDBSCAN -> 15% rule.

The method, after Bazargani et al. (arXiv 2511.17485), with the choices the paper leaves open. Numbers in
brackets were measured on the synthetic cohort of 17,394 people, whose truth marks 6% of spines as
non-age-related (multiple fractures, focal stenosis, spondylolisthesis):
- Features (spinejax.cohort.pathology_features.region_at_least): per condition and region, the number of levels
  graded at least moderate, and at least severe (config.min_grade = 2). Mild findings are left out: they
  are near-universal after 40, and radiologists agree on them least. Under the Canberra distance every
  finding one spine has and another lacks adds 1, whatever its size, so with mild counts in, the
  distance is dominated by which mild findings a middle-aged spine happens to have: HDBSCAN then cuts
  normal spines into many such sub-patterns, each under 15% of its age band [with mild counts: 15% of
  normal spines ineligible; without: 0%].
- Canberra distance, sum_i |x_i - y_i| / (|x_i| + |y_i|), with 0/0 terms counted as 0, so two spines
  without findings are at distance 0 and each finding one spine has and the other lacks adds 1: the
  distance counts disagreeing findings and weighs small counts as much as large ones.
- Identical feature rows (most young spines have no moderate findings at all) are embedded once and share
  their point: UMAP then sees no zero-distance neighbour lists, and a large table embeds much faster.
- UMAP (umap-learn, seeded, so single-threaded and repeatable) to `n_components` dimensions, with
  n_neighbors (30) well under the size of the groups to be found, so a distinct pattern's neighbourhood
  is its own kind and it embeds as an island, then HDBSCAN on the embedding of every case.
- HDBSCAN merges clusters closer than cluster_selection_epsilon (0.8 UMAP units) in the embedding. The
  age continuum of normal spines has density ripples that EOM would otherwise keep as separate small
  clusters, rare by the 15% rule [epsilon 0: 40% of normal spines ineligible]; distinct patterns lie
  several units away from it. UMAP with min_dist 0 fixes the embedding's scale, so one epsilon serves
  cohorts of 600 to 18,000 series.
- The threshold: age-related degeneration is common among people of the same age, while a pattern such as
  multiple fractures is rare at every age. The paper's rule counts a cluster's members ("15% of the
  population"); here (config.rarity='pattern') the 15% is applied to the cluster's pattern instead: the
  findings at least half its members have (when none does, the most common one if a quarter have it), and
  the share of the people of its members' ages (each age band weighted by the members in it) who have every
  one of them in at least as many levels as the cluster's typical (median) member. A cluster without
  findings is common.
  Why: UMAP sometimes cuts a few hundred ordinary degenerating 60-year-olds off the continuum of normal
  spines, where they form a cluster of 2-6% of their age band, rare by headcount; their pattern (disc
  desiccation and height loss) is held by a third of people their age. The planted non-age-related clusters'
  patterns are held by 0.4-2% of people their age: a wide gap around 15%. [4 cohort draws x 5 UMAP seeds at
  17,394 people, this machine's numpy and with its AVX-512 kernels switched off, identical: headcount,
  precision 0.57-1.00 and up to 4.8% of normal spines ineligible, up to 5.2% of people changing eligibility
  with the seed; pattern, precision 0.96-1.00, recall 0.92-0.94, at most 0.26% of normal spines ineligible
  and 0.27% flipping.] config.rarity='headcount' is the paper's rule, with config.threshold_population
  'age_band' (a cluster is common when it holds 15% of at least one age band) or 'everyone' (read
  literally: a cluster of healthy 75-84 year olds would then be rare merely because few people are that old).
- Cases in common clusters are eligible. HDBSCAN noise is ineligible (noise_policy='ineligible', the
  paper's rule), or joins the cluster most of its nearest clustered neighbours are in
  (noise_policy='nearest').
- Small cohorts: when no cluster is common (a pilot cohort of 40 people is all HDBSCAN noise) the rule has
  nothing to compare against. small_cohort_policy='all_valid' (the default) then makes every valid row
  eligible and the step says so loudly; 'paper' keeps the rule, which then leaves no one eligible (also
  said loudly). The method was measured to find the planted non-age-related spines from a few thousand
  people (recall 0.87 at 3,000, 0.34 at 600, precision 1.00 at both): below that, eligibility is a weak
  filter at best.
"""

from __future__ import annotations

import dataclasses
import warnings

import hdbscan
import ml_collections
import numpy as np
import pandas as pd
import umap
from sklearn.neighbors import NearestNeighbors

NOISE = -1


@dataclasses.dataclass
class Eligibility:
    """Per case (n): embedding [n, d] float32, cluster [n] int (-1 noise), membership [n] in [0, 1],
    eligible [n] bool, reason [n] str; clusters: one row per cluster (see `cluster_table`)."""

    embedding: np.ndarray
    cluster: np.ndarray
    membership: np.ndarray
    eligible: np.ndarray
    reason: np.ndarray
    clusters: pd.DataFrame
    fallback: bool = False  # True when no common cluster was found (config.small_cohort_policy applies)


class TooFewProfiles(ValueError):
    """The cases hold too few distinct pathology profiles for UMAP (all grades zero, say)."""


def canberra(x: np.ndarray, y: np.ndarray) -> float:
    """Canberra distance of two feature vectors, 0/0 terms counted as 0 (reference for the tests)."""
    numerator, denominator = np.abs(x - y), np.abs(x) + np.abs(y)
    return float(np.sum(np.divide(numerator, denominator, out=np.zeros_like(numerator, dtype=float),
                                  where=denominator > 0)))


def curve_parameters(min_dist: float, spread: float = 1.0) -> tuple[float, float]:
    """UMAP's curve parameters a, b for `min_dist`, rounded to 6 decimals. UMAP fits them with scipy's
    curve_fit, whose result moves in the 10th digit with numpy's SIMD kernels (AVX2 against AVX-512), and the
    optimisation magnifies that into another embedding; rounded, every machine embeds alike."""
    a, b = umap.umap_.find_ab_params(spread, min_dist)
    return round(float(a), 6), round(float(b), 6)


def embed(features: np.ndarray, config: ml_collections.ConfigDict) -> np.ndarray:
    """UMAP embedding [n, n_components] float32 of `features` [n, f] under config.metric."""
    unique, inverse = np.unique(features, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    n_neighbors = int(min(config.umap.n_neighbors, len(unique) - 1))
    needed = max(3, config.umap.n_components + 2)  # its spectral start needs n_components + 1 < profiles
    if len(unique) < needed:
        raise TooFewProfiles(f"only {len(unique)} distinct pathology profile(s) among {len(features)} cases: "
                             f"too few to embed and cluster (UMAP needs at least {needed})")
    a, b = curve_parameters(config.umap.min_dist)
    reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=config.umap.min_dist, a=a, b=b,
                        n_components=config.umap.n_components, metric=config.metric,
                        n_epochs=config.umap.n_epochs, random_state=config.seed, init="spectral")
    with warnings.catch_warnings():  # a seed makes UMAP single-threaded, which it says each time
        warnings.filterwarnings("ignore", message="n_jobs value .* overridden")
        points = reducer.fit_transform(unique.astype(np.float32))
    return points[inverse].astype(np.float32)


def cluster(embedding: np.ndarray, config: ml_collections.ConfigDict) -> tuple[np.ndarray, np.ndarray]:
    """HDBSCAN labels [n] (-1 noise) and soft membership of the assigned cluster [n]."""
    n = len(embedding)
    size = max(int(round(config.hdbscan.min_cluster_fraction * n)), config.hdbscan.min_cluster_size_floor)
    model = hdbscan.HDBSCAN(min_cluster_size=size, min_samples=min(config.hdbscan.min_samples, size),
                            cluster_selection_method=config.hdbscan.cluster_selection_method,
                            cluster_selection_epsilon=config.hdbscan.cluster_selection_epsilon)
    if config.noise_policy not in ("ineligible", "nearest"):
        raise ValueError(f"noise_policy must be 'ineligible' or 'nearest', not {config.noise_policy!r}")
    labels = model.fit_predict(embedding.astype(np.float64))
    membership = model.probabilities_.astype(np.float32)
    noise = labels == NOISE
    if config.noise_policy == "nearest" and noise.any() and (~noise).any():
        # A noise case joins the cluster most of its k nearest clustered neighbours belong to.
        k = int(min(config.noise_neighbours, (~noise).sum()))
        index = NearestNeighbors(n_neighbors=k).fit(embedding[~noise])
        _, neighbours = index.kneighbors(embedding[noise])
        votes = labels[~noise][neighbours]
        winner = np.array([np.bincount(v).argmax() for v in votes])
        share = (votes == winner[:, None]).mean(axis=1)
        labels = labels.copy()
        labels[noise] = winner
        membership[noise] = share
    return labels, membership


def age_band_names(edges: tuple[int, ...]) -> list[str]:
    return [f"{lo}-{hi - 1}" for lo, hi in zip(edges[:-1], edges[1:])]


def cluster_table(labels: np.ndarray, ages: np.ndarray, config: ml_collections.ConfigDict,
                  features: np.ndarray | None = None, names: list[str] | None = None) -> pd.DataFrame:
    """One row per cluster (noise included as -1): size, share of everyone, the largest share it holds of an
    age band and which band, age summary, its pattern and how common that pattern is, and whether the cluster
    is common under config's rule (config.rarity, config.threshold_population, config.common_threshold).

    features [n, f] (>= 0; a finding is present when > 0) and their names are needed by rarity 'pattern'.
    The pattern of a cluster: the findings at least config.pattern_prevalence of its members have (when
    none does, its most prevalent finding if at least half that share have it). A person holds it with at
    least the members' median count of each finding. Its share: of people of its members' ages (each age band
    weighted by the members in it; 'age_band'), or of everyone ('everyone'), the share that hold it (1 for
    an empty pattern: a cluster without findings).
    """
    edges = tuple(config.age_bands)
    band_names = age_band_names(edges)
    band = np.digitize(ages, edges[1:-1])  # ages beyond the edges fall in the first or last band
    band_sizes = np.bincount(band, minlength=len(band_names))
    rarity = config.get("rarity", "headcount")
    if rarity not in ("headcount", "pattern"):
        raise ValueError(f"rarity must be 'headcount' or 'pattern', not {rarity!r}")
    if config.threshold_population not in ("age_band", "everyone"):
        raise ValueError(f"threshold_population must be 'age_band' or 'everyone', "
                         f"not {config.threshold_population!r}")
    if rarity == "pattern" and features is None:
        raise ValueError("rarity 'pattern' needs the features")
    present = None if features is None else np.asarray(features) > 0
    rows = []
    for label in np.unique(labels):
        members = labels == label
        shares = np.bincount(band[members], minlength=len(band_names)) / np.maximum(band_sizes, 1)
        row = {
            "cluster": int(label), "size": int(members.sum()), "share_of_all": float(members.mean()),
            "max_age_band_share": float(shares.max()), "age_band_of_max": band_names[int(shares.argmax())],
            "age_mean": float(ages[members].mean()), "age_sd": float(ages[members].std()),
            "age_min": float(ages[members].min()), "age_max": float(ages[members].max()),
        }
        if present is not None:
            prevalence = present[members].mean(axis=0)
            pattern = np.flatnonzero(prevalence >= config.pattern_prevalence)
            if not len(pattern) and len(prevalence) and prevalence.max() >= config.pattern_prevalence / 2:
                pattern = np.array([int(prevalence.argmax())])  # mixed findings (fractures here or there)
            # Holding a finding means having at least as many levels of it as the cluster's typical member (a
            # cluster of multiple fractures is not matched by everyone with one fracture).
            values = np.asarray(features, np.float64)[:, pattern]
            typical = np.median(values[members], axis=0)
            smallest = np.where(values[members] > 0, values[members], np.inf).min(axis=0)
            holds = (values >= np.maximum(typical, smallest)).all(axis=1)
            if config.threshold_population == "age_band":
                weights = np.bincount(band[members], minlength=len(band_names)) / members.sum()
                held = np.bincount(band, weights=holds, minlength=len(band_names)) / np.maximum(band_sizes, 1)
                pattern_share = float(weights @ held)
            else:
                pattern_share = float(holds.mean())
            row.update({"pattern": "+".join(names[i] for i in pattern) if names else ",".join(map(str, pattern)),
                        "pattern_share": pattern_share})
        if rarity == "pattern":
            measure = row["pattern_share"]
        else:
            measure = row["max_age_band_share"] if config.threshold_population == "age_band" else row["share_of_all"]
        row["common"] = bool(label != NOISE and measure >= config.common_threshold)
        rows.append(row)
    return pd.DataFrame(rows)


def _embed_and_cluster(features: np.ndarray, ages: np.ndarray, config: ml_collections.ConfigDict
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Embedding, labels and membership, over everyone or within each age band (config.stratify)."""
    if not config.stratify_by_age_band:
        embedding = embed(features, config)
        return (embedding, *cluster(embedding, config))
    band = np.digitize(ages, tuple(config.age_bands)[1:-1])
    embedding = np.zeros((len(features), config.umap.n_components), np.float32)
    labels = np.full(len(features), NOISE)
    membership = np.zeros(len(features), np.float32)
    offset = 0
    for b in np.unique(band):
        rows = band == b
        points = embed(features[rows], config)
        points[:, 0] += 1.2 * b * (np.ptp(points[:, 0]) + 1.0)  # side by side in pictures
        embedding[rows] = points
        band_labels, membership[rows] = cluster(points, config)
        labels[rows] = np.where(band_labels >= 0, band_labels + offset, NOISE)
        offset += max(band_labels.max() + 1, 0)
    return embedding, labels, membership


def find_normal_spines(features: np.ndarray, ages: np.ndarray, config: ml_collections.ConfigDict,
                       names: list[str] | None = None) -> Eligibility:
    """The whole method on `features` [n, f] (>= 0) and `ages` [n] years; `names` of the feature columns
    label each cluster's pattern in the cluster table."""
    if len(features) != len(ages):
        raise ValueError(f"{len(features)} feature rows but {len(ages)} ages")
    if (features < 0).any():
        raise ValueError("pathology features must be >= 0 (Canberra distance assumes it)")
    embedding, labels, membership = _embed_and_cluster(features, ages, config)
    table = cluster_table(labels, ages, config, features, names)
    common = set(table.loc[table["common"], "cluster"])
    eligible = np.isin(labels, list(common))
    by_cluster = table.set_index("cluster")
    by_age = config.threshold_population == "age_band"
    reasons = {}
    for label, row in by_cluster.iterrows():
        if config.get("rarity", "headcount") == "pattern":
            share, what = row["pattern_share"], "people of its members' ages" if by_age else "everyone"
            held = f"its pattern ({row['pattern'] or 'no finding'}) is held by {{share}} of {what}"
            said_common, said_rare = f"common pattern: {held}", f"rare pattern: {held}"
        else:
            share = row["max_age_band_share"] if by_age else row["share_of_all"]
            where = f"an age band (age {row['age_band_of_max']})" if by_age else "everyone"
            said_common = f"common cluster: {{share}} of {where}"
            said_rare = f"rare cluster: at most {{share}} of {where}"
        if label == NOISE:
            reasons[label] = "HDBSCAN noise: in no cluster"
        elif row["common"]:
            reasons[label] = said_common.format(share=f"{share:.0%}")
        else:
            reasons[label] = said_rare.format(share=f"{share:.1%}") + f", below {config.common_threshold:.0%}"
    reason = np.array([reasons[label] for label in labels], dtype=object)
    if not common and config.small_cohort_policy == "all_valid":
        # No common cluster (a pilot cohort is all HDBSCAN noise): the cohort is too small for the rule to tell
        # age-related degeneration from anything else. Keep everyone, and say so (eligibility.py).
        eligible = np.ones(len(labels), bool)
        reason = np.array([f"small cohort: no common cluster among {len(labels)} cases, so every valid row is "
                           f"eligible (config.small_cohort_policy); was: {r}" for r in reason], dtype=object)
    return Eligibility(embedding, labels, membership, eligible, reason, table, fallback=not common)


def everyone(n: int, ages: np.ndarray, config: ml_collections.ConfigDict, why: str) -> Eligibility:
    """Every case eligible, in one cluster: the small-cohort rule when the cases cannot even be embedded
    (fewer than three distinct pathology profiles, say all grades 0)."""
    labels = np.zeros(n, int)
    return Eligibility(np.zeros((n, config.umap.n_components), np.float32), labels, np.ones(n, np.float32),
                       np.ones(n, bool), np.array([f"small cohort: {why}; every valid row is eligible"] * n),
                       cluster_table(labels, ages, config, np.zeros((n, 0))), fallback=True)
