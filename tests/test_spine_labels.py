from spinejax.scans import spine_labels


def test_totalspineseg_values():
    # Spot checks against TotalSpineSeg's published class list.
    assert spine_labels.LABELS["spinal_cord"] == 1 and spine_labels.LABELS["spinal_canal"] == 2
    assert spine_labels.vertebra_label("C2") == 12 and spine_labels.vertebra_label("T1") == 21
    assert spine_labels.vertebra_label("T12") == 32 and spine_labels.vertebra_label("L5") == 45
    assert spine_labels.vertebra_label("S1") == spine_labels.SACRUM == 50
    assert spine_labels.disc_label("C2-C3") == 63 and spine_labels.disc_label("C6-C7") == 67
    assert spine_labels.disc_label("C7-T1") == 71 and spine_labels.disc_label("T11-T12") == 82
    assert spine_labels.disc_label("T12-L1") == 91 and spine_labels.disc_label("L4-L5") == 95
    assert spine_labels.disc_label("L5-S1") == 100


def test_levels_and_regions_partition_the_spine():
    assert len(spine_labels.VERTEBRAE) == len(spine_labels.DISC_LEVELS) == 23
    assert spine_labels.DISC_LEVELS[0] == "C2-C3" and spine_labels.DISC_LEVELS[-1] == "L5-S1"
    drawn = {spine_labels.vertebra_label(v) for v in spine_labels.VERTEBRAE}
    drawn |= {spine_labels.disc_label(d) for d in spine_labels.DISC_LEVELS}
    by_region = [set(spine_labels.labels_of_region(r)) for r in spine_labels.REGIONS]
    assert set.union(*by_region) == drawn | {11}  # C1 belongs to the cervical region too
    assert sum(len(r) for r in by_region) == len(set.union(*by_region))
    assert spine_labels.region_of_level("T12-L1") == "thoracic"
    assert spine_labels.region_of_level("L5-S1") == "lumbar"


def test_unknown_names_are_refused():
    import pytest

    with pytest.raises(ValueError, match="unknown disc level"):
        spine_labels.disc_label("L6-S1")
    with pytest.raises(ValueError, match="unknown vertebra"):
        spine_labels.vertebra_label("T13")
