"""Record selection, nested data subsets, the evaluation layout and augmentation."""

import ml_collections
import numpy as np
import pandas as pd
import pytest
from absl import flags

from spinejax import augment, input_pipeline


def test_nested_subsets_grow_by_whole_subjects():
    subjects = pd.Series([f"s{i:03d}" for i in range(200) for _ in range(2)])  # two series per subject
    kept = {f: set(subjects[input_pipeline.nested_subset(subjects, f, seed=0)]) for f in (0.1, 0.25, 0.5, 1.0)}
    assert [len(kept[f]) for f in (0.1, 0.25, 0.5, 1.0)] == [20, 50, 100, 200]
    assert kept[0.1] < kept[0.25] < kept[0.5] < kept[1.0]
    mask = input_pipeline.nested_subset(subjects, 0.25, seed=0)
    assert mask.sum() == 100  # both series of each kept subject
    assert set(subjects[input_pipeline.nested_subset(subjects, 0.25, seed=1)]) != kept[0.25]
    with pytest.raises(ValueError, match="fraction"):
        input_pipeline.nested_subset(subjects, 0.0, seed=0)


@pytest.mark.parametrize("count,batch,processes", [(50, 16, 1), (50, 16, 2), (7, 8, 4), (64, 16, 2)])
def test_evaluation_layout_reads_every_row_once(count, batch, processes):
    parts = [input_pipeline.eval_layout(count, batch, processes, p) for p in range(processes)]
    assert len({len(p) for p in parts}) == 1 and len(parts[0]) % (batch // processes) == 0
    # Stitched as the global array is (batch b: process 0's slice, then process 1's ...), rows come in order.
    local = batch // processes
    stitched = np.concatenate([np.concatenate([p[b * local:(b + 1) * local] for p in parts])
                               for b in range(len(parts[0]) // local)])
    assert list(stitched[:count]) == list(range(count)) and (stitched[count:] == -1).all()


def _augment_config(**changes):
    values = dict(enabled=True, flip_left_right=True, intensity_scale=0.1, intensity_shift=0.1,
                  gamma_log_range=0.2, bias_field=0.05, noise_sd=0.05, shift_voxels=2)
    values.update(changes)
    return ml_collections.ConfigDict(values)


def _slab():
    rng = np.random.default_rng(0)
    mask = np.zeros((8, 40, 20), np.uint8)
    mask[2:6, 5:35, 6:14] = 1
    volume = np.where(mask, rng.normal(0, 1, mask.shape), 0).astype(np.float32)
    return volume, mask


def test_augmentation_stays_in_the_mask_and_is_seeded():
    volume, mask = _slab()
    config = _augment_config()
    a = augment.augment(volume, mask, np.random.default_rng(5), config)
    b = augment.augment(volume, mask, np.random.default_rng(5), config)
    c = augment.augment(volume, mask, np.random.default_rng(6), config)
    assert a.dtype == np.float16 and a.shape == volume.shape
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # Whatever the shift and flip, nothing appears outside the (moved) mask: the count of non-zero voxels
    # cannot exceed the mask's.
    assert np.count_nonzero(a) <= mask.sum()
    assert np.count_nonzero(a) > 0.8 * mask.sum()


def test_augmentation_switched_off_is_the_identity_and_the_flip_is_left_right_only():
    volume, mask = _slab()
    off = _augment_config(flip_left_right=False, intensity_scale=0, intensity_shift=0, gamma_log_range=0,
                          bias_field=0, noise_sd=0, shift_voxels=0)
    volume = volume.astype(np.float16)  # the records' precision, which augmentation returns
    np.testing.assert_array_equal(augment.augment(volume, mask, np.random.default_rng(0), off), volume)
    flips = {augment.augment(volume, mask, np.random.default_rng(s), _augment_config(
        **{**off.to_dict(), "flip_left_right": True})).tobytes() for s in range(20)}
    assert flips == {volume.tobytes(), volume[::-1].copy().tobytes()}


def _placed(volume, flip: bool, dr: int, dc: int) -> np.ndarray:
    """The slab flipped left-right (axis 0) if asked, then moved by whole voxels, zeros where nothing lands."""
    x = volume[::-1] if flip else volume
    out = np.zeros_like(x)
    rows, cols = x.shape[1:]
    for r in range(rows):
        for c in range(cols):
            if 0 <= r + dr < rows and 0 <= c + dc < cols:
                out[:, r + dr, c + dc] = x[:, r, c]
    return out


def test_flips_and_shifts_place_every_value_exactly_where_a_plain_loop_puts_it():
    volume, mask = _slab()
    volume = volume.astype(np.float16)
    only_moves = _augment_config(intensity_scale=0, intensity_shift=0, gamma_log_range=0, bias_field=0,
                                 noise_sd=0, shift_voxels=2)
    candidates = {(f, dr, dc): _placed(volume, f, dr, dc).tobytes()
                  for f in (False, True) for dr in range(-2, 3) for dc in range(-2, 3)}
    seen = set()
    for seed in range(60):
        out = augment.augment(volume, mask, np.random.default_rng(seed), only_moves)
        hits = [k for k, v in candidates.items() if v == out.tobytes()]
        assert len(hits) == 1, f"seed {seed}: not one of the 50 flip-and-shift placements"
        seen.add(hits[0])
    assert len(seen) > 25 and {f for f, _, _ in seen} == {False, True}
    # augment_inside on the in-mask values is what augment does on the dense slab.
    inside = mask.astype(bool)
    config = _augment_config()
    np.testing.assert_array_equal(augment.augment_inside(volume[inside], inside, np.random.default_rng(4), config),
                                  augment.augment(volume, mask, np.random.default_rng(4), config))


def test_each_intensity_change_has_the_size_its_config_says():
    volume, mask = _slab()
    inside = mask.astype(bool)
    base = volume.astype(np.float16).astype(np.float32)[inside]
    off = dict(flip_left_right=False, intensity_scale=0, intensity_shift=0, gamma_log_range=0, bias_field=0,
               noise_sd=0, shift_voxels=0)
    run = lambda seed, **on: augment.augment(volume, mask, np.random.default_rng(seed), _augment_config(
        **{**off, **on})).astype(np.float32)[inside]
    gains = [np.median(run(s, intensity_scale=0.1) / base) for s in range(40)]
    assert 0.9 - 1e-3 <= min(gains) and max(gains) <= 1.1 + 1e-3 and np.ptp(gains) > 0.1
    offsets = [np.median(run(s, intensity_shift=0.1) - base) for s in range(40)]
    assert -0.1 - 2e-3 <= min(offsets) and max(offsets) <= 0.1 + 2e-3 and np.ptp(offsets) > 0.1
    noise_sds = [np.std(run(s, noise_sd=0.05) - base) for s in range(40)]  # sd drawn in U(0, 0.05)
    assert max(noise_sds) <= 0.05 * 1.05 and 0.018 < np.mean(noise_sds) < 0.032
    field = [run(s, bias_field=0.05) / base for s in range(10)]
    assert all(0.7 < f.min() and f.max() < 1.4 for f in field) and np.mean([np.ptp(f) for f in field]) > 0.02


def test_the_training_loader_augments_inside_the_mask_and_reproducibly(training_records):
    selection = input_pipeline.select(training_records, "lumbar", "train")
    loader = lambda augment_config, seed=0: next(iter(input_pipeline.train_loader(
        selection, local_batch=4, seed=seed, augment_config=augment_config, worker_count=0, worker_buffer_size=1)))
    off = loader(_augment_config(enabled=False))
    on, again, other_seed = loader(_augment_config()), loader(_augment_config()), loader(_augment_config(), seed=1)
    assert on["volume"].shape == off["volume"].shape and on["volume"].shape[-1] == 1
    assert on["volume"].dtype == off["volume"].dtype == np.float16  # as stored; the model casts on the device
    # The same records in the same order; augmented (not what the records hold), reproducibly from the seed.
    np.testing.assert_array_equal(on["index"], off["index"])
    np.testing.assert_array_equal(on["volume"], again["volume"])
    assert not np.array_equal(other_seed["index"], on["index"])
    decoded = [input_pipeline.Decode(selection.plan_hash, selection.grid).map(
        input_pipeline.RecordSource(selection.paths, selection.rows["source_index"])[int(i)]) for i in off["index"]]
    for k, element in enumerate(decoded):
        np.testing.assert_array_equal(off["volume"][k, ..., 0], element["volume"])
        assert not np.array_equal(on["volume"][k, ..., 0], element["volume"])
        # Shifted by at most shift_voxels and maybe flipped: nothing outside the mask's reach becomes non-zero.
        assert np.count_nonzero(on["volume"][k]) <= np.count_nonzero(element["mask"])


def test_bias_field_is_the_exp_of_the_seven_term_quadratic():
    # augment._bias_factors_from gives the field as a depth profile times a rows x cols plane; the values are those
    # of the quadratic exp(c . (z, y, x, z^2, y^2, x^2, y x)) with the seven coefficients in that order.
    shape, strength = (5, 12, 7), 0.3
    c = np.random.default_rng(3).normal(0, strength, 7)
    along_slices, plane = augment._bias_factors_from(shape, c)
    field = along_slices[:, None, None] * plane[None]
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    expected = np.exp(c[0] * z + c[1] * y + c[2] * x + c[3] * z * z + c[4] * y * y + c[5] * x * x + c[6] * y * x)
    assert field.dtype == np.float32 and field.shape == shape
    np.testing.assert_allclose(field, expected, rtol=1e-5)
    assert np.ptp(np.log(field)) > 0.1  # not a constant field


def test_training_batches_do_not_depend_on_worker_processes_and_each_epoch_is_a_permutation(training_records):
    flags.FLAGS.mark_as_parsed()  # grain's worker processes read an absl flag; spinejax.main has parsed them
    selection = input_pipeline.select(training_records, "lumbar", "train")
    count = len(selection.rows)

    def batches(workers: int, n: int) -> list[dict]:
        iterator = iter(input_pipeline.train_loader(selection, local_batch=4, seed=3, augment_config=_augment_config(),
                                                    worker_count=workers, worker_buffer_size=1))
        taken = [next(iterator) for _ in range(n)]
        iterator.close()
        return taken

    epochs = -(-2 * count // 4) + 1
    alone, with_workers = batches(0, epochs), batches(2, 4)
    for a, b in zip(alone, with_workers):
        np.testing.assert_array_equal(a["index"], b["index"])
        np.testing.assert_array_equal(a["volume"], b["volume"])
    index = np.concatenate([b["index"] for b in alone])
    first, second = index[:count], index[count:2 * count]
    assert sorted(first) == sorted(second) == list(range(count))  # every record once per epoch
    assert not np.array_equal(first, second)  # shuffled afresh each epoch


def test_each_process_part_has_its_own_records_and_its_own_augmentation(training_records):
    # grain keys random draws by position within a part: with one seed for all parts every process would add
    # the same offset (and noise, flips, shifts) at the same step.
    selection = input_pipeline.select(training_records, "lumbar", "train")
    only_offset = _augment_config(flip_left_right=False, intensity_scale=0, gamma_log_range=0, bias_field=0,
                                  noise_sd=0, shift_voxels=0, intensity_shift=0.5)
    source = input_pipeline.RecordSource(selection.paths, selection.rows["source_index"])
    decode = input_pipeline.Decode(selection.plan_hash, selection.grid)
    parts = []
    for part in (0, 1):
        batch = input_pipeline.train_dataset(selection, local_batch=4, seed=0, augment_config=only_offset,
                                             shard_index=part, shard_count=2)[0]
        offsets = []
        for k, i in enumerate(batch["index"]):
            plain = decode.map(source[int(i)])
            inside = plain["mask"] != 0
            offsets.append(float(np.median(batch["volume"][k, ..., 0].astype(np.float32)[inside]
                                           - plain["volume"].astype(np.float32)[inside])))
        parts.append((set(batch["index"].tolist()), np.round(offsets, 2)))
    assert not parts[0][0] & parts[1][0]
    assert np.abs(np.concatenate([parts[0][1], parts[1][1]])).max() > 0.05  # the offsets are there
    assert not np.allclose(parts[0][1], parts[1][1], atol=0.02)


def test_a_batch_places_each_slab_in_its_own_mask_and_drops_what_moves_off_the_grid():
    # augment_batch computes every slab's values in one buffer: each slab must get its own values back, placed by
    # its own flip and shift; a mask touching the grid's edge loses exactly the voxels moved off it.
    volume, mask = _slab()
    edge = np.zeros_like(mask)
    edge[1:7, 0:12, 14:20] = 1  # touches the first row and the last column
    rng = np.random.default_rng(1)
    edge_volume = np.where(edge, rng.normal(0, 1, edge.shape), 0).astype(np.float16)
    slabs = [(volume.astype(np.float16), mask), (edge_volume, edge)]
    only_moves = _augment_config(intensity_scale=0, intensity_shift=0, gamma_log_range=0, bias_field=0,
                                 noise_sd=0, shift_voxels=2)
    placements = [{_placed(v, f, dr, dc).tobytes() for f in (False, True) for dr in range(-2, 3)
                   for dc in range(-2, 3)} for v, _ in slabs]
    moved_off = 0
    for seed in range(30):
        out = augment.augment_batch([v[m.astype(bool)] for v, m in slabs], [m.astype(bool) for _, m in slabs],
                                    np.random.default_rng(seed), only_moves)
        assert out.shape == (2, *mask.shape) and out.dtype == np.float16 and out.flags.c_contiguous
        for k in range(2):
            assert out[k].tobytes() in placements[k], f"seed {seed}: slab {k} is not one of its placements"
        moved_off += np.count_nonzero(out[1]) < edge.sum()
    assert moved_off > 5  # the edge slab did lose voxels off the grid in some draws
    # Intensity changes: each slab's values get its own gain, none of another slab's (float16 rounds each value
    # and its product to 2^-11 relative: the ratios agree to 5e-3).
    only_gain = _augment_config(flip_left_right=False, intensity_shift=0, gamma_log_range=0, bias_field=0,
                                noise_sd=0, shift_voxels=0, intensity_scale=0.1)
    out = augment.augment_batch([v[m.astype(bool)] for v, m in slabs], [m.astype(bool) for _, m in slabs],
                                np.random.default_rng(0), only_gain)
    gains = []
    for k, (v, m) in enumerate(slabs):
        inside = m.astype(bool)
        ratio = out[k][inside].astype(np.float32) / v[inside].astype(np.float32)
        assert np.ptp(ratio) < 5e-3 * np.median(ratio), f"slab {k} got more than one gain"
        gains.append(np.median(ratio))
    assert all(0.9 - 1e-3 <= g <= 1.1 + 1e-3 and abs(g - 1) > 1e-3 for g in gains) and gains[0] != gains[1]
