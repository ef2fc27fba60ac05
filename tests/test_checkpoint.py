"""Checkpoints: exact round trips, step bookkeeping, target checks, damaged steps and fallback."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ami import checkpoint


class Params(NamedTuple):
    w: jax.Array
    b: jax.Array


class TrainState(NamedTuple):
    params: Params
    opt: dict[str, Any]
    key: jax.Array
    step: int
    buffers: list[Any]


def make_state(seed: int) -> TrainState:
    k1, k2 = jax.random.split(jax.random.key(seed))
    return TrainState(
        params=Params(w=jax.random.normal(k1, (3, 4)), b=jnp.arange(4, dtype=jnp.bfloat16) + seed),
        opt={"count": jnp.int32(seed), "lr": 0.5 + seed, "moments": (np.full((2,), seed, np.int16), None)},
        key=k2,
        step=seed * 10,
        buffers=[np.float32(seed + 0.25), True, jnp.zeros((0, 2))],
    )


def assert_identical(restored: Any, expected: Any) -> None:
    """Same structure, same leaf types, dtypes and values (keys compared through their data)."""
    assert jax.tree.structure(restored) == jax.tree.structure(expected)
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(expected), strict=True):
        assert type(got) is type(want), (type(got), type(want))
        if isinstance(want, jax.Array) and jax.dtypes.issubdtype(want.dtype, jax.dtypes.prng_key):
            assert got.dtype == want.dtype
            got, want = jax.random.key_data(got), jax.random.key_data(want)
        if isinstance(want, bool | int | float):
            assert got == want
        else:
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_round_trip_with_target_is_exact_for_several_steps(tmp_path):
    for seed in (1, 2, 3):
        path = checkpoint.save(tmp_path, seed * 100, make_state(seed), {"config": {"lr": 0.1}, "seed": seed})
        assert path == tmp_path / str(seed * 100) and path.is_dir()
    assert checkpoint.latest_step(tmp_path) == 300
    assert checkpoint.all_steps(tmp_path) == [100, 200, 300]
    for seed in (1, 2, 3):
        state, metadata = checkpoint.restore(tmp_path, seed * 100, target=make_state(0))
        assert_identical(state, make_state(seed))
        assert metadata == {"config": {"lr": 0.1}, "seed": seed}
    state, metadata = checkpoint.restore(tmp_path, target=make_state(0))
    assert_identical(state, make_state(3))
    assert metadata["seed"] == 3
    # the restored key is a working key: it draws exactly what the saved one draws
    np.testing.assert_array_equal(jax.random.normal(state.key, (3,)), jax.random.normal(make_state(3).key, (3,)))


def test_metadata_is_json_in_the_step_directory(tmp_path):
    path = checkpoint.save(tmp_path, 5, make_state(1), {"run": "demo", "config": {"planner": {"horizon": 32}}})
    files = [f for f in path.rglob("*") if f.is_file() and f.parent.name == "metadata"]
    payloads = [json.loads(f.read_text()) for f in files if f.name != "commit_success.txt"]
    assert {"run": "demo", "config": {"planner": {"horizon": 32}}} in payloads


def test_restore_without_target_gives_nested_dicts_and_lists(tmp_path):
    checkpoint.save(tmp_path, 0, make_state(2))
    state, metadata = checkpoint.restore(tmp_path)
    assert metadata == {}
    assert set(state) == {"params", "opt", "key", "step", "buffers"}
    np.testing.assert_array_equal(state["params"]["w"], make_state(2).params.w)
    assert state["params"]["b"].dtype == jnp.bfloat16
    assert state["step"] == 20 and type(state["step"]) is int
    assert state["opt"]["lr"] == 2.5 and type(state["opt"]["lr"]) is float
    assert isinstance(state["opt"]["moments"], list) and state["opt"]["moments"][0].dtype == np.int16
    assert state["key"].dtype == make_state(2).key.dtype
    np.testing.assert_array_equal(jax.random.key_data(state["key"]), jax.random.key_data(make_state(2).key))
    assert state["buffers"][1] is True and state["buffers"][2].shape == (0, 2)


def test_single_array_state_and_abstract_target(tmp_path):
    checkpoint.save(tmp_path, 1, jnp.arange(6.0).reshape(2, 3))
    state, _ = checkpoint.restore(tmp_path)
    np.testing.assert_array_equal(state, np.arange(6.0).reshape(2, 3))
    target = {"x": jax.ShapeDtypeStruct((2,), jnp.float32), "k": jax.ShapeDtypeStruct((), jax.random.key(0).dtype)}
    checkpoint.save(tmp_path, 2, {"x": jnp.ones(2), "k": jax.random.key(7)})
    state, _ = checkpoint.restore(tmp_path, target=target)
    assert isinstance(state["x"], jax.Array) and state["k"].dtype == target["k"].dtype
    np.testing.assert_array_equal(jax.random.key_data(state["k"]), jax.random.key_data(jax.random.key(7)))


def test_max_to_keep_deletes_oldest(tmp_path):
    for step in range(5):
        checkpoint.save(tmp_path, step, make_state(step), max_to_keep=2)
    assert checkpoint.all_steps(tmp_path) == [3, 4]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == ["3", "4"]
    assert_identical(checkpoint.restore(tmp_path, 3, target=make_state(0))[0], make_state(3))


def test_latest_step_of_missing_or_empty_directory(tmp_path):
    assert checkpoint.latest_step(tmp_path / "nothing") is None
    assert checkpoint.latest_step(tmp_path) is None
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint in"):
        checkpoint.restore(tmp_path)


def test_save_rejects_bad_input(tmp_path):
    checkpoint.save(tmp_path, 1, make_state(1))
    with pytest.raises(ValueError, match="step 1 already exists"):
        checkpoint.save(tmp_path, 1, make_state(1))
    with pytest.raises(ValueError, match=r"state leaf \['name'\].*got str"):
        checkpoint.save(tmp_path, 2, {"name": "abc", "x": jnp.ones(2)})
    with pytest.raises(ValueError, match="JSON-serialisable"):
        checkpoint.save(tmp_path, 2, make_state(1), {"fn": print})
    with pytest.raises(ValueError, match="non-negative int step"):
        checkpoint.save(tmp_path, -1, make_state(1))
    assert checkpoint.all_steps(tmp_path) == [1]


def test_target_mismatch_names_the_leaf(tmp_path):
    checkpoint.save(tmp_path, 1, make_state(1))
    wrong_shape = make_state(0)._replace(params=Params(w=jnp.zeros((3, 5)), b=make_state(0).params.b))
    with pytest.raises(ValueError, match=r"target leaf \.params\.w: expected shape \(3, 5\) dtype float32.*\(3, 4\)"):
        checkpoint.restore(tmp_path, target=wrong_shape)
    wrong_dtype = make_state(0)._replace(opt={**make_state(0).opt, "count": jnp.float32(0)})
    with pytest.raises(ValueError, match=r"target leaf \.opt\['count'\]: expected shape \(\) dtype float32.*int32"):
        checkpoint.restore(tmp_path, target=wrong_dtype)
    not_a_key = make_state(0)._replace(key=jnp.zeros((), jnp.uint32))
    with pytest.raises(ValueError, match=r"target leaf \.key: .*dtype uint32.*dtype key<fry>"):
        checkpoint.restore(tmp_path, target=not_a_key)
    extra = make_state(0)._replace(buffers=[*make_state(0).buffers, jnp.zeros(1)])
    with pytest.raises(ValueError, match=r"target leaf \.buffers\[3\] is not in checkpoint step 1"):
        checkpoint.restore(tmp_path, target=extra)
    fewer = make_state(0)._replace(buffers=make_state(0).buffers[:2])
    with pytest.raises(ValueError, match=r"leaves missing from the target: \['\.buffers\[2\]'\]"):
        checkpoint.restore(tmp_path, target=fewer)
    with pytest.raises(ValueError) as info:  # a mismatch is the caller's error, never a damaged checkpoint
        checkpoint.restore(tmp_path, target=wrong_shape, fallback=True)
    assert not isinstance(info.value, checkpoint.CheckpointError)


def data_files(step_dir: Path) -> list[Path]:
    """The array data files that restoring reads, largest first."""
    files = [f for f in (step_dir / "state" / "d").iterdir() if f.is_file()]
    return sorted(files, key=lambda f: f.stat().st_size, reverse=True)


def big_state(seed: int) -> dict[str, Any]:
    return {"w": jnp.full((64, 64), float(seed)), "key": jax.random.key(seed), "step": seed}


@pytest.mark.parametrize(
    "damage",
    [
        lambda f: f.write_bytes(f.read_bytes()[: f.stat().st_size // 2]),  # truncated
        lambda f: f.unlink(),  # deleted
        lambda f: f.write_bytes(f.read_bytes()[:100] + bytes([f.read_bytes()[100] ^ 1]) + f.read_bytes()[101:]),
    ],
    ids=["truncated", "deleted", "bit-flip"],
)
def test_damaged_step_raises_and_fallback_uses_older_step(tmp_path, caplog, damage):
    for step in (10, 20, 30):
        checkpoint.save(tmp_path, step, big_state(step), {"step": step})
    damage(data_files(tmp_path / "30")[0])
    with pytest.raises(checkpoint.CheckpointError, match=f"checkpoint step 30 in {tmp_path}"):
        checkpoint.restore(tmp_path)
    with caplog.at_level(logging.WARNING, logger="ami.checkpoint"):
        state, metadata = checkpoint.restore(tmp_path, target=big_state(0), fallback=True)
    assert metadata == {"step": 20} and state["step"] == 20
    np.testing.assert_array_equal(state["w"], big_state(20)["w"])
    assert "restored step 20" in caplog.text and "step 30" in caplog.text


def test_damaged_layout_or_metadata_raises(tmp_path):
    checkpoint.save(tmp_path, 1, big_state(1), {"a": 1})
    (tmp_path / "1" / "layout" / "metadata").write_text('{"format": 1, "leaves": [')
    with pytest.raises(checkpoint.CheckpointError, match="checkpoint step 1"):
        checkpoint.restore(tmp_path)
    checkpoint.save(tmp_path, 3, big_state(3))
    layout_file = tmp_path / "3" / "layout" / "metadata"
    layout_file.write_text(layout_file.read_text().replace('"float32"', '"float33"'))  # valid JSON, bad dtype
    with pytest.raises(checkpoint.CheckpointError, match=r"checkpoint step 3 .*malformed layout"):
        checkpoint.restore(tmp_path, 3)
    checkpoint.save(tmp_path, 2, big_state(2), {"a": 2})
    (tmp_path / "2" / "metadata" / "metadata").unlink()
    with pytest.raises(checkpoint.CheckpointError, match="checkpoint step 2"):
        checkpoint.restore(tmp_path, 2)
    with pytest.raises(checkpoint.CheckpointError, match="restores cleanly; tried steps \\[3, 2, 1\\]"):
        checkpoint.restore(tmp_path, fallback=True)


def test_fallback_starts_from_the_requested_step(tmp_path):
    for step in (1, 2, 3):
        checkpoint.save(tmp_path, step, big_state(step))
    for f in (tmp_path / "2" / "state" / "d").iterdir():
        f.unlink()
    assert checkpoint.restore(tmp_path, 2, fallback=True)[0]["step"] == 1
    assert checkpoint.restore(tmp_path, fallback=True)[0]["step"] == 3
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint for step 7"):
        checkpoint.restore(tmp_path, 7)


def test_unfinished_save_is_never_picked(tmp_path, caplog):
    checkpoint.save(tmp_path, 1, big_state(1))
    partial = tmp_path / "2.orbax-checkpoint-tmp"  # what a save killed before its final rename leaves
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "_METADATA").write_text("{")
    assert checkpoint.latest_step(tmp_path) == 1 and checkpoint.unfinished(tmp_path) == [partial]
    with caplog.at_level(logging.WARNING, logger="ami.checkpoint"):
        assert checkpoint.restore(tmp_path)[0]["step"] == 1
    assert f"ignoring unfinished checkpoint {partial}" in caplog.text
    checkpoint.save(tmp_path, 2, big_state(2))
    assert checkpoint.restore(tmp_path)[0]["step"] == 2


def test_relative_directory_round_trips(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    state = {"w": np.arange(3, dtype=np.float32)}
    checkpoint.save("runs/relative/checkpoints", 5, state, {"k": 1})
    restored, metadata = checkpoint.restore("runs/relative/checkpoints")
    np.testing.assert_array_equal(restored["w"], state["w"])
    assert metadata == {"k": 1} and checkpoint.latest_step("runs/relative/checkpoints") == 5


def array_data_file(step_dir: Path) -> Path:
    """The largest file of a step's state item: where the array payloads are."""
    files = [f for f in (step_dir / "state").rglob("*") if f.is_file()]
    return max(files, key=lambda f: f.stat().st_size)


def test_every_flipped_byte_of_the_array_data_is_caught(tmp_path):
    """Orbax does not checksum payloads: a flipped byte would restore wrong numbers without the CRC."""
    state = {"w": jax.random.normal(jax.random.key(0), (128, 128)), "step": 3}
    checkpoint.save(tmp_path, 1, state)
    data = array_data_file(tmp_path / "1")
    original = data.read_bytes()
    assert len(original) > 128 * 128 * 2  # the (zstd-compressed) payload, not a manifest
    outcomes = []
    for offset in range(0, len(original), len(original) // 24):
        flipped = bytearray(original)
        flipped[offset] ^= 0x10
        data.write_bytes(bytes(flipped))
        try:
            restored = checkpoint.restore(tmp_path, target=state)[0]
        except checkpoint.CheckpointError as error:
            outcomes.append("checksum" if "fails its checksum" in str(error) else "unreadable")
        else:  # a byte nothing reads (padding): the numbers must be the saved ones
            np.testing.assert_array_equal(restored["w"], state["w"])
            outcomes.append("unused")
    assert outcomes.count("checksum") >= len(outcomes) // 2, outcomes
    data.write_bytes(original)
    np.testing.assert_array_equal(checkpoint.restore(tmp_path, target=state)[0]["w"], state["w"])


def test_checksum_names_the_damaged_leaf(tmp_path):
    state = {"a": jnp.zeros((64, 64)), "b": jnp.ones((64, 64))}
    checkpoint.save(tmp_path, 4, state)
    layout_file = tmp_path / "4" / "layout" / "metadata"
    layout = json.loads(layout_file.read_text())
    assert layout["format"] == 2 and all(isinstance(r["crc32"], int) for r in layout["leaves"])
    layout["leaves"][1]["crc32"] ^= 1  # as if leaf b's bytes had changed
    layout_file.write_text(json.dumps(layout))
    with pytest.raises(checkpoint.CheckpointError, match=r"step 4 .*leaf \['b'\] fails its checksum"):
        checkpoint.restore(tmp_path)


def test_checkpoints_written_before_checksums_still_restore(tmp_path):
    state = big_state(5)
    checkpoint.save(tmp_path, 5, state)
    layout_file = tmp_path / "5" / "layout" / "metadata"
    layout = json.loads(layout_file.read_text())
    for record in layout["leaves"]:
        del record["crc32"]
    layout_file.write_text(json.dumps({**layout, "format": 1}))
    assert_identical(checkpoint.restore(tmp_path, target=state)[0], state)
