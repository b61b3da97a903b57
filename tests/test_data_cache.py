"""The cache of encoded synthetic recordings (training.datacache): a second run on the same seeds reads
what the first made, bit for bit; anything that changes the data makes a new entry; a damaged entry is
made again; a cache that cannot be written never stops the run."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from training import datacache
from training.data import SyntheticSpec, synthetic_stereo

SMALL = dict(height=24, width=32, encoding="sbt", bins=5, window_us=50_000, length=3, stride=2, burn_in=1)
SPEC = SyntheticSpec(train_seeds=(100,), val_seeds=(0,), seconds=0.3, val_seconds=0.3, margin=8)


def same(a, b) -> bool:
    return all(np.array_equal(getattr(x, k), getattr(y, k), equal_nan=k == "disparity")
               and x.fb == y.fb and x.name == y.name and getattr(x, k).dtype == getattr(y, k).dtype
               for x, y in zip(a.train + a.val, b.train + b.val, strict=True) for k in datacache.FIELDS)


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """A cache folder filled by one run, and that run's data."""
    folder = tmp_path_factory.mktemp("filled") / "cache"
    made = datacache.Cache(folder)
    data = synthetic_stereo(SPEC, cache=made, **SMALL)
    assert (made.hits, made.made) == (0, 2) and len(list(folder.glob("*.npz"))) == 2
    return folder, data


@pytest.fixture
def folder(filled, tmp_path):
    """A copy of the filled cache that a test may damage."""
    copy = tmp_path / "cache"
    shutil.copytree(filled[0], copy)
    return copy


def test_second_run_reads_the_first_bit_for_bit(filled, folder):
    again = datacache.Cache(folder)
    second = synthetic_stereo(SPEC, cache=again, **SMALL)
    assert (again.hits, again.made) == (2, 0)
    assert "2 of 2 recordings from the cache" in second.description
    assert same(filled[1], second)
    assert not [p for p in filled[0].iterdir() if p.suffix != ".npz"], "temporary files left behind"


class Keys(datacache.Cache):
    """Records the key of the first recording asked for (the first training seed), then stops."""

    class Stop(Exception):
        pass

    def get(self, key, make):
        self.key = datacache.entry_name(key)
        raise self.Stop


def first_key(spec, **kw) -> str:
    keys = Keys(enabled=False)
    with pytest.raises(Keys.Stop):
        synthetic_stereo(spec, cache=keys, **{**SMALL, **kw})
    return keys.key


@pytest.mark.parametrize("change", [
    {"spec": SyntheticSpec(train_seeds=(101,), val_seeds=(0,), seconds=0.3, val_seconds=0.3, margin=8)},
    {"spec": SyntheticSpec(train_seeds=(100,), val_seeds=(0,), seconds=0.4, val_seconds=0.3, margin=8)},
    {"spec": SyntheticSpec(train_seeds=(100,), val_seeds=(0,), seconds=0.3, val_seconds=0.3, margin=4)},
    {"spec": SyntheticSpec(train_seeds=(100,), val_seeds=(0,), seconds=0.3, val_seconds=0.3, margin=8,
                           randomize_sensor=False)},
    {"spec": SyntheticSpec(train_seeds=(100,), val_seeds=(0,), seconds=0.3, val_seconds=0.3, margin=8,
                           train_textures="heldout")},
    {"spec": SyntheticSpec(train_seeds=(100,), val_seeds=(0,), seconds=0.3, val_seconds=0.3, margin=8,
                           train_scene_types=("room",))},
    {"kw": {"bins": 3}},
    {"kw": {"encoding": "counts"}},
    {"kw": {"window_us": 40_000}},
    {"kw": {"height": 32}},
])
def test_what_changes_the_training_recording_changes_its_key(change):
    base = first_key(SPEC)
    assert first_key(SPEC) == base  # the same settings, the same entry
    assert first_key(change.get("spec", SPEC), **change.get("kw", {})) != base
    # what only the training loop uses does not make new data
    assert first_key(SPEC, length=5, stride=1, burn_in=2) == base


def test_the_generator_code_is_part_of_the_key(monkeypatch):
    key = {"seed": 1}
    before = datacache.entry_name(key)
    monkeypatch.setattr(datacache, "source_digest", lambda: "another version")
    assert datacache.entry_name(key) != before


def test_a_damaged_entry_is_made_again_and_replaced(filled, folder, caplog):
    first = filled[1]
    victim = sorted(folder.glob("*.npz"))[0]
    victim.write_bytes(victim.read_bytes()[:100])  # cut short
    cache = datacache.Cache(folder)
    with caplog.at_level(logging.WARNING, logger="training.datacache"):
        second = synthetic_stereo(SPEC, cache=cache, **SMALL)
    assert (cache.hits, cache.made) == (1, 1)
    assert "cannot be read" in caplog.text and victim.name in caplog.text
    assert same(first, second)
    third = datacache.Cache(folder)
    synthetic_stereo(SPEC, cache=third, **SMALL)
    assert third.hits == 2  # replaced by a good entry


@pytest.mark.parametrize("damage", [
    lambda a: a.update(has_gt=a["has_gt"][:-1]),
    lambda a: a.update(disparity=a["disparity"][:, :-1]),
    lambda a: a.update(left=a["left"][0]),
    lambda a: a.update(left=a["left"].astype(np.float64), right=a["right"].astype(np.float64)),
    lambda a: a.update(disparity=a["disparity"].astype(np.float16)),
    lambda a: a.update(gt_index=a["gt_index"].astype(np.int32)),
    lambda a: a.pop("fb"),
])
def test_an_entry_with_wrong_shapes_or_types_is_not_used(folder, damage):
    victim = sorted(folder.glob("*.npz"))[0]
    with np.load(victim) as z:
        arrays = {k: z[k] for k in z.files}
    damage(arrays)
    with open(victim, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises((ValueError, KeyError)):  # what Cache.get takes as "cannot be read": made again
        datacache._load(victim)


def test_an_entry_that_cannot_be_used_is_made_again(folder):
    victim = sorted(folder.glob("*.npz"))[0]
    with np.load(victim) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["disparity"] = arrays["disparity"].astype(np.float64)
    with open(victim, "wb") as f:
        np.savez(f, **arrays)
    cache = datacache.Cache(folder)
    synthetic_stereo(SPEC, cache=cache, **SMALL)
    assert cache.made == 1


def test_a_cache_that_cannot_be_written_does_not_stop_the_run(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cache = datacache.Cache(blocker / "cache")
    with caplog.at_level(logging.WARNING, logger="training.datacache"):
        data = synthetic_stereo(SPEC, cache=cache, **SMALL)
    assert len(data.train) == 1 and cache.made == 2
    assert caplog.text.count("cannot write") == 1  # said once, not per recording


def test_the_environment_chooses_the_folder_or_turns_it_off(monkeypatch, tmp_path):
    monkeypatch.setenv(datacache.ENV, str(tmp_path / "mine"))
    assert datacache.cache_dir() == tmp_path / "mine"
    monkeypatch.setenv(datacache.ENV, "off")
    assert datacache.cache_dir() is None
    cache = datacache.Cache()
    assert cache.folder is None and "data cache off" in cache.summary()
    assert cache.get({"seed": 1}, lambda: {"made": True}) == {"made": True} and cache.made == 1
    monkeypatch.delenv(datacache.ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert datacache.cache_dir() == tmp_path / "xdg" / "snn-toolchain" / "synthetic"
    monkeypatch.setenv(datacache.ENV, "  ")  # set but empty: as if unset
    assert datacache.cache_dir() == tmp_path / "xdg" / "snn-toolchain" / "synthetic"


def test_training_reads_the_cache_on_its_second_run(monkeypatch, tmp_path, capsys):
    """The command line: the second run's data line says where its recordings came from, and both runs
    score the same held-out windows the same."""
    import json
    from pathlib import Path

    from training.train import main

    genotype = Path(__file__).resolve().parents[1] / "genotypes" / "stereo_small.yaml"
    monkeypatch.setenv(datacache.ENV, str(tmp_path / "cache"))
    outs, logs = [], []
    for k in range(2):
        out = tmp_path / f"run{k}"
        args = [str(genotype), "--out", str(out), "--set", "input.height=24", "--set",
                "input.width=32", "--epochs", "1", "--max-batches", "1", "--batch-size", "1", "--windows", "2",
                "--burn-in", "1", "--train-seeds", "100", "--val-seeds", "0", "--seconds", "0.3", "--quiet",
                "--no-tensorboard", "--threads", "1", "--exec", "eager"]
        assert main(args) == 0
        outs.append(out)
        logs.append(capsys.readouterr().out)
    rows = [json.loads((o / "metrics.jsonl").read_text().splitlines()[-1]) for o in outs]
    assert rows[0]["val"] == rows[1]["val"]
    assert "0 of 2 recordings from the cache" in logs[0], logs[0]
    assert "2 of 2 recordings from the cache" in logs[1], logs[1]


def test_a_full_disk_while_storing_leaves_nothing_behind_and_warns_once(tmp_path, monkeypatch, caplog):
    import errno

    def full(f, **arrays):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(datacache.np, "savez", full)
    folder = tmp_path / "cache"
    cache = datacache.Cache(folder)
    with caplog.at_level(logging.WARNING, logger="training.datacache"):
        data = synthetic_stereo(SPEC, cache=cache, **SMALL)
    assert len(data.train) == 1 and len(data.val) == 1 and cache.made == 2
    assert caplog.text.count("cannot write") == 1 and "No space left" in caplog.text
    assert list(folder.iterdir()) == []  # no partial entry, no temporary file


def test_a_folder_where_an_entry_goes_is_left_alone(folder, caplog):
    victim = sorted(folder.glob("*.npz"))[0]
    victim.unlink()
    victim.mkdir()
    (victim / "mine.txt").write_text("a user's file")
    cache = datacache.Cache(folder)
    with caplog.at_level(logging.WARNING, logger="training.datacache"):
        synthetic_stereo(SPEC, cache=cache, **SMALL)
    assert (cache.hits, cache.made) == (1, 1) and "cannot write" in caplog.text
    assert (victim / "mine.txt").read_text() == "a user's file"


def test_two_runs_storing_the_same_entry_at_once_leave_one_good_entry(tmp_path):
    """Two caches filling one folder, interleaved as two runs started together would: the second write of an
    entry replaces the first whole (atomic rename), and a third run reads every entry."""
    folder = tmp_path / "cache"
    key = {"seed": 7}
    entry = {"left": np.ones((2, 3, 4, 5), np.int8), "right": np.zeros((2, 3, 4, 5), np.int8),
             "disparity": np.full((2, 4, 5), 1.5, np.float32), "has_gt": np.ones(2, bool),
             "gt_index": np.arange(2, dtype=np.int64), "fb": 2.5}
    first, second = datacache.Cache(folder), datacache.Cache(folder)
    made = []
    # the second run misses while the first is still generating: its make() runs the first run to the end
    second.get(key, lambda: (first.get(key, lambda: made.append(1) or entry), made.append(2), entry)[-1])
    assert made == [1, 2] and first.made == second.made == 1
    third = datacache.Cache(folder)
    got = third.get(key, lambda: pytest.fail("made again"))
    assert third.hits == 1 and got["fb"] == 2.5
    assert all(np.array_equal(got[k], entry[k]) for k in datacache.FIELDS)
    assert [p.name for p in folder.iterdir()] == [datacache.entry_name(key)]
