"""Config files take only the arguments they know: a typo is an error, never silently the full network."""

from __future__ import annotations

import pytest

from configs import data_size, default, loss_l2, region_lumbar


def test_presets_and_values_are_strict():
    assert default.get_config("cpu").preset == "cpu" and default.get_config().preset == "full"
    assert data_size.get_config("0.25,cpu").data.fraction == 0.25
    for module, arg in ((default, "gpu"), (loss_l2, "0.25"), (region_lumbar, "cpu,fast"), (data_size, "cpu")):
        with pytest.raises(ValueError):
            module.get_config(arg)


def test_finer_records_presets_cover_at_least_what_the_default_plan_covers():
    from configs import records
    base = records.get_config()
    for preset in ("rows_2mm", "paper"):
        config = records.get_config(preset)
        assert set(config.grids) == set(base.grids)
        for region, grid in base.grids.items():  # extent in mm along slices, rows and columns
            extent = [n * mm for n, mm in zip(config.grids[region], config.spacing_mm)]
            default_extent = [n * mm for n, mm in zip(grid, base.spacing_mm)]
            assert all(e >= d for e, d in zip(extent, default_extent)), (preset, region)
            assert preset != "rows_2mm" or extent == default_extent  # the same field of view, finer rows
    with pytest.raises(ValueError, match="unknown records preset"):
        records.get_config("rows2mm")


def test_no_config_points_at_a_folder_by_default():
    config = default.get_config("cpu")
    assert config.data.records_dir == "" and config.data.eligibility_csv == ""  # given on the command line
