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


def test_no_config_points_at_a_folder_by_default():
    config = default.get_config("cpu")
    assert config.data.records_dir == "" and config.data.eligibility_csv == ""  # given on the command line
