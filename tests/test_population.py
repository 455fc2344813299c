import dataclasses

import numpy as np

from data_prep.phantom import population

P = population.PopulationParams()


def test_subjects_follow_the_parameters():
    subjects = population.sample_subjects(20000, np.random.default_rng(0), P)
    assert subjects["age"].between(P.age_min, P.age_max).all()
    assert 48 < subjects["age"].mean() < 58
    assert set(subjects["site"]) == set(population.SITES)
    for column, prev_f, prev_m in population.LIFESTYLE:
        answered = subjects[column].notna()
        assert abs((~answered).mean() - P.lifestyle_missing) < 0.01
        for sex, prevalence in (("F", prev_f), ("M", prev_m)):
            observed = subjects.loc[answered & (subjects["sex"] == sex), column].mean()
            assert abs(observed - prevalence) < 0.03, (column, sex)
    assert abs(subjects["abnormal"].mean() - P.abnormal_fraction) < 0.01
    assert set(subjects.loc[subjects["abnormal"], "abnormal_kind"]) == set(P.abnormal_kinds)
    assert (subjects.loc[~subjects["abnormal"], "abnormal_kind"] == "").all()


def test_planted_effects_shift_biological_age():
    subjects = population.sample_subjects(20000, np.random.default_rng(1), P)
    gap = population.bio_age(subjects["age"], subjects["lifestyle_shift"], subjects["individual_shift"]) \
        - subjects["age"]
    for column, effect in P.lifestyle_effects:
        exposed = subjects[column] == 1
        unexposed = subjects[column] == 0
        difference = gap[exposed].mean() - gap[unexposed].mean()
        assert abs(difference - effect) < 0.4, (column, difference, effect)
    assert abs(subjects["individual_shift"].std() - P.individual_sd) < 0.1


def test_noise_floor_near_paper_mae_and_monotone_in_individual_variation():
    floor = population.noise_floor(P, n=100_000)
    assert 3.4 < floor["bayes_mae"] < 4.0  # the paper's MAE is 3.7 years
    assert floor["bayes_mae"] < floor["bio_as_age_mae"]  # the Bayes predictor beats using bio_age as is
    tighter = population.noise_floor(dataclasses.replace(P, individual_sd=2.0), n=100_000)
    assert tighter["bayes_mae"] < 0.6 * floor["bayes_mae"]


def test_repeat_scans_are_planned_and_age_forward():
    subjects = population.sample_subjects(5000, np.random.default_rng(2), P)
    scans = population.plan_scans(subjects, np.random.default_rng(3), P)
    per_subject = scans.groupby("subject").size()
    assert per_subject.max() == 2
    share = (per_subject == 2).mean()
    assert abs(share - (P.rescan_fraction + P.followup_fraction)) < 0.015
    second = scans[scans["scan"] == 1].set_index("subject")
    first = scans[scans["scan"] == 0].set_index("subject").loc[second.index]
    gained = second["age"] - first["age"]
    assert (gained[second["study"] == 0] == 0).all()
    assert gained[second["study"] == 1].between(0.99, 4.01).all()
