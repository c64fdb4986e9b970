"""The grain pipeline is deterministic, process-count independent, resumable, and eval passes are exact."""
import itertools

import grain
import numpy as np
import pytest
from conftest import ItemsOnly

from data.pipeline import VALID, eval_batches, make_dataset
from data.sources import ArraySource, get_source


def _indexed_source(n: int = 24) -> ArraySource:
    """A source whose label is the example's index, so batches show exactly which examples they hold."""
    images = (np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 1), np.uint8))
    return ArraySource("indexed", images, np.arange(n))


def _labels(ds, count: int) -> list[list[int]]:
    """Labels of the first `count` batches of a fresh iterator."""
    return [b["label"].tolist() for b in itertools.islice(iter(ds), count)]


class _Jitter(grain.transforms.RandomMap):
    """Adds a random offset to the image: a stand-in for random augmentation."""

    def random_map(self, example, rng):
        return {**example, "image": example["image"] + np.uint8(rng.integers(0, 100))}


def _plus_one(example):
    return {**example, "image": example["image"] + 1}


def test_batches_are_deterministic_by_seed():
    source = _indexed_source()
    first = _labels(make_dataset(source, global_batch_size=4, seed=7), 12)
    assert first == _labels(make_dataset(source, global_batch_size=4, seed=7), 12)
    assert first != _labels(make_dataset(source, global_batch_size=4, seed=8), 12)
    batch = next(iter(make_dataset(source, global_batch_size=4, seed=7)))
    assert batch["image"].shape == (4, 2, 2, 1) and batch["image"].dtype == np.uint8
    assert batch["label"].dtype == np.int64


def test_every_epoch_is_a_new_permutation():
    source = _indexed_source(12)
    labels = sum(_labels(make_dataset(source, global_batch_size=4, seed=0), 9), [])
    epochs = [labels[i : i + 12] for i in range(0, 36, 12)]
    assert all(sorted(e) == list(range(12)) for e in epochs)
    assert epochs[0] != epochs[1] != epochs[2] and epochs[0] != list(range(12))


def test_no_shuffle_and_finite_epochs():
    source = _indexed_source(10)
    batches = _labels(make_dataset(source, global_batch_size=4, seed=0, shuffle=False, num_epochs=2), 100)
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1], [2, 3, 4, 5], [6, 7, 8, 9]]
    ragged = _labels(make_dataset(source, global_batch_size=4, seed=0, num_epochs=1, drop_remainder=False), 100)
    assert [len(b) for b in ragged] == [4, 4, 2] and sorted(sum(ragged, [])) == list(range(10))
    assert len(_labels(make_dataset(source, global_batch_size=4, seed=0, num_epochs=1), 100)) == 2


@pytest.mark.parametrize("process_count", [2, 4])
@pytest.mark.parametrize("num_epochs", [None, 3])
def test_processes_split_the_single_process_batches(process_count, num_epochs):
    source = _indexed_source(22)
    kw = dict(global_batch_size=8, seed=3, num_epochs=num_epochs)
    single = _labels(make_dataset(source, **kw), 20)
    per_process = [
        _labels(make_dataset(source, process_index=p, process_count=process_count, **kw), 20)
        for p in range(process_count)
    ]
    assert all(len(batches) == len(single) for batches in per_process)
    for k, batch in enumerate(single):
        parts = [batches[k] for batches in per_process]
        assert all(len(part) == 8 // process_count for part in parts)
        assert sum(parts, []) == batch
    if num_epochs:
        assert len(single) == 22 * 3 // 8


def test_halves_of_an_epoch_are_disjoint():
    source = _indexed_source(16)
    halves = [
        set(sum(_labels(make_dataset(source, global_batch_size=4, seed=1, process_index=p, process_count=2), 4), []))
        for p in (0, 1)
    ]
    assert not halves[0] & halves[1] and halves[0] | halves[1] == set(range(16))


def test_bad_process_layouts_are_refused():
    source = _indexed_source()
    with pytest.raises(ValueError, match="not a positive multiple of process_count=4"):
        make_dataset(source, global_batch_size=6, seed=0, process_count=4)
    with pytest.raises(ValueError, match="process_index=2 is not in"):
        make_dataset(source, global_batch_size=4, seed=0, process_index=2, process_count=2)
    with pytest.raises(ValueError, match="seed=-1"):
        make_dataset(source, global_batch_size=4, seed=-1)
    with pytest.raises(ValueError, match="eval_batches"):
        make_dataset(source, global_batch_size=4, seed=0, process_count=2, num_epochs=1, drop_remainder=False)


def test_resume_mid_epoch_gives_the_remaining_batches():
    source = _indexed_source(20)
    ds = make_dataset(source, global_batch_size=4, seed=5, num_epochs=3, transform=_Jitter())
    it = iter(ds)
    for _ in range(7):
        next(it)
    state = it.get_state()
    rest = [(b["label"].tolist(), b["image"].tolist()) for b in it]
    resumed = iter(ds)
    resumed.set_state(state)
    assert [(b["label"].tolist(), b["image"].tolist()) for b in resumed] == rest
    assert len(rest) == 15 - 7


def test_iterator_round_trips_through_orbax(tmp_path):
    import orbax.checkpoint as ocp

    ds = make_dataset(_indexed_source(), global_batch_size=4, seed=2)
    it = iter(ds)
    for _ in range(5):
        next(it)
    with ocp.CheckpointManager(tmp_path, item_names=("data",)) as manager:
        manager.save(5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
        manager.wait_until_finished()
        expected = [next(it)["label"].tolist() for _ in range(6)]
        fresh = iter(ds)
        manager.restore(5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
    assert [next(fresh)["label"].tolist() for _ in range(6)] == expected


def test_transforms_run_per_example_and_random_ones_ignore_process_count():
    source = _indexed_source(12)
    plain = next(iter(make_dataset(source, global_batch_size=4, seed=0, transform=_plus_one)))
    np.testing.assert_array_equal(plain["image"][:, 0, 0, 0], plain["label"] + 1)
    kw = dict(global_batch_size=4, seed=0, transform=_Jitter())
    single = next(iter(make_dataset(source, **kw)))["image"]
    split = [next(iter(make_dataset(source, process_index=p, process_count=2, **kw)))["image"] for p in (0, 1)]
    np.testing.assert_array_equal(np.concatenate(split), single)
    assert not np.array_equal(single[:, 0, 0, 0], next(iter(make_dataset(source, **{**kw, "transform": None})))["image"][:, 0, 0, 0])


def test_worker_processes_match_in_process_reading_and_resume():
    source = _indexed_source(20)
    kw = dict(global_batch_size=4, seed=4, num_epochs=2, transform=_Jitter())
    expected = [(b["label"].tolist(), b["image"].tolist()) for b in make_dataset(source, **kw)]
    ds = make_dataset(source, worker_count=2, **kw)
    it = iter(ds)
    head = [next(it) for _ in range(3)]
    state = it.get_state()
    it.close()
    resumed = iter(ds)
    resumed.set_state(state)
    got = [(b["label"].tolist(), b["image"].tolist()) for b in head + list(resumed)]
    resumed.close()
    assert got == expected


@pytest.mark.parametrize("process_count", [1, 2])
def test_eval_batches_cover_every_example_once(process_count):
    source = _indexed_source(10)
    per_process = [list(eval_batches(source, 4, p, process_count)) for p in range(process_count)]
    assert all(len(batches) == 3 for batches in per_process)
    merged = [
        {k: np.concatenate([batches[i][k] for batches in per_process]) for k in ("label", VALID, "image")}
        for i in range(3)
    ]
    assert [m[VALID].tolist() for m in merged] == [[True] * 4, [True] * 4, [True, True, False, False]]
    assert all(m["image"].shape == (4, 2, 2, 1) for m in merged)
    real = np.concatenate([m["label"][m[VALID]] for m in merged])
    assert real.tolist() == list(range(10))
    assert merged[-1]["label"][~merged[-1][VALID]].tolist() == [0, 0]


def test_eval_batches_keep_a_face_mask_field_apart_from_the_padding_flag():
    """A source with its own "mask" (synthetic faces' face mask) reaches evaluators unchanged."""
    source = get_source("synthetic_faces:ids=0;n=3;size=32;masks=1", "test")
    batch = next(eval_batches(source, 4))
    faces = np.stack([source[i]["mask"] for i in range(3)])
    np.testing.assert_array_equal(batch["mask"][:3], faces)
    assert batch["mask"].dtype == faces.dtype and batch[VALID].tolist() == [True, True, True, False]


def test_eval_batches_on_the_whole_mnist_test_set(shared_data):
    source = get_source(f"idx:{shared_data / 'mnist'}", "test")
    batches = list(eval_batches(source, 512))
    assert len(batches) == 20 and sum(int(b[VALID].sum()) for b in batches) == 10000
    labels = np.concatenate([b["label"][b[VALID]] for b in batches])
    np.testing.assert_array_equal(labels, source.labels)


def test_batch_gather_fast_path_yields_exactly_the_per_example_batches():
    """ArraySource.gather reads whole batches; the stream must equal per-example reading."""
    src = get_source("digits")
    fast = iter(make_dataset(src, global_batch_size=64, seed=3))
    slow = iter(make_dataset(ItemsOnly(src), global_batch_size=64, seed=3))
    for _ in range(60):  # > 2 epochs of 1,500 digits
        a, b = next(fast), next(slow)
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


def test_pair_batches_are_deterministic_resumable_and_split_across_processes():
    from data.pipeline import make_pair_dataset

    a = ArraySource("a", np.arange(40, dtype=np.uint8).reshape(40, 1, 1, 1), np.zeros(40, np.int64))
    b = ArraySource("b", 100 + np.arange(30, dtype=np.uint8).reshape(30, 1, 1, 1), np.ones(30, np.int64))
    one = iter(make_pair_dataset(a, b, global_batch_size=8, seed=5))
    batches = [next(one) for _ in range(12)]
    assert all(set(x) == {"a", "b"} and x["a"]["image"].shape == (8, 1, 1, 1) for x in batches)
    assert all((x["a"]["label"] == 0).all() and (x["b"]["label"] == 1).all() for x in batches)
    assert not np.array_equal(batches[0]["a"]["image"], batches[0]["b"]["image"] - 100)

    again = iter(make_pair_dataset(a, b, global_batch_size=8, seed=5))
    for _ in range(5):
        next(again)
    state = again.get_state()
    resumed = iter(make_pair_dataset(a, b, global_batch_size=8, seed=5))
    resumed.set_state(state)
    for k in range(5, 12):
        np.testing.assert_equal(next(resumed), batches[k])

    halves = [iter(make_pair_dataset(a, b, global_batch_size=8, seed=5, process_index=p, process_count=2))
              for p in range(2)]
    for k in range(6):
        parts = [next(h) for h in halves]
        for side in ("a", "b"):
            joined = np.concatenate([p[side]["image"] for p in parts])
            np.testing.assert_array_equal(joined, batches[k][side]["image"])
