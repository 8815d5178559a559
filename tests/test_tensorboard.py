"""TensorBoard logging (``tensorboard=True``, ``--log tensorboard``): the events read back equal metrics.jsonl.

Skipped without ``tensorboard`` (the optional extra ``gradgeo[tensorboard]``).
"""

import json
import math

import pytest

from gradgeo.cli import main
from gradgeo.experiments.grid import run_dir
from gradgeo.training.config import TrainConfig
from gradgeo.training.engine import train

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def read_events(folder) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def read_rows(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def expected_scalars(rows: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """What the events must hold: every number of every row (lists as key/index), at the step of its epoch."""
    scalars: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        for key, value in row.items():
            items = enumerate(value) if isinstance(value, list) else [(None, value)]
            for index, v in items:
                if key != "epoch" and v is not None:
                    scalars.setdefault(key if index is None else f"{key}/{index}", []).append((row["epoch"], v))
    return scalars


def assert_events_match(run) -> list[dict]:
    rows = read_rows(run)
    events, expected = read_events(run / "tensorboard"), expected_scalars(rows)
    assert sorted(events) == sorted(expected)
    for tag, values in expected.items():
        assert [step for step, _ in events[tag]] == [step for step, _ in values], tag
        for (_, got), (_, want) in zip(events[tag], values):
            assert math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-12), (tag, got, want)  # stored as float32
    return rows


def test_events_equal_the_metrics_file_through_an_interruption(tiny_fashion, tmp_path):
    """A channel-metric run logs its metrics, lr, lam and the gradient norms before and after the transform;
    after an interruption and a resume the events hold each epoch once, equal to metrics.jsonl."""
    config = TrainConfig(data_dir=str(tiny_fashion), optimizer="sgd+sobolev:lam=0.3", width=0.5, batch_size=50,
                         epochs=3, val_size=100)
    train(config, tmp_path, log=None, stop_after=2, tensorboard=True)
    history = train(config, tmp_path, log=None, resume=True, tensorboard=True)
    rows = assert_events_match(tmp_path)
    assert rows == history and [r["epoch"] for r in rows] == [1, 2, 3]
    assert {"train_loss", "test_acc", "val_acc", "lr", "lam", "grad_norm_before", "grad_norm_after"} <= set(rows[0])
    assert all(r["lam"] == 0.3 for r in rows)
    assert all(0 < r["grad_norm_after"] < r["grad_norm_before"] for r in rows)  # sobolev damps channel modes


def test_without_a_channel_metric_or_without_tensorboard(tiny_fashion, tmp_path):
    """A bare optimizer has no strength or gradient norms to log; without the flag no events and no extra fields."""
    config = TrainConfig(data_dir=str(tiny_fashion), optimizer="sgd", width=0.5, batch_size=50, epochs=1)
    train(config, tmp_path / "bare", log=None, tensorboard=True)
    rows = assert_events_match(tmp_path / "bare")
    assert not {"lam", "grad_norm_before", "grad_norm_after"} & set(rows[0])

    history = train(TrainConfig(**{**config.__dict__, "optimizer": "sgd+laplacian:sigma=0.5"}), tmp_path / "off",
                    log=None)
    assert not (tmp_path / "off" / "tensorboard").exists()
    assert not {"sigma", "grad_norm_before"} & set(history[0])


def test_tensorboard_needs_a_run_folder():
    with pytest.raises(ValueError, match="give an out_dir"):
        train(TrainConfig(epochs=1), None, tensorboard=True)


def test_cli_log_tensorboard_for_train_and_compare(tiny_fashion, tmp_path, capsys):
    tiny = ["--data-dir", str(tiny_fashion), "--width", "0.5", "--batch-size", "100", "--epochs", "2", "--quiet",
            "--log", "tensorboard"]
    assert main(["train", *tiny, "--optimizer", "sgd+laplacian:sigma=0.5", "--out", str(tmp_path / "train")]) == 0
    rows = assert_events_match(tmp_path / "train")
    assert [r["sigma"] for r in rows] == [0.5, 0.5]
    assert main(["compare", "sgd", "sgd+h0:lam=2", *tiny, "--seeds", "1", "--out", str(tmp_path / "cmp")]) == 0
    for spec in ("sgd", "sgd+h0:lam=2"):
        rows = assert_events_match(run_dir(tmp_path / "cmp", spec, 0))
    assert rows[0]["lam"] == 2


def test_anytime_run_logs_each_exit(tiny_fashion, tmp_path):
    """Per-exit lists of an anytime run are one scalar per exit (``test_exit_acc/0`` ...), through the CLI."""
    assert main(["anytime", "train", "--data-dir", str(tiny_fashion), "--model", "nested_depth", "--width", "0.25",
                 "--epochs", "1", "--batch-size", "50", "--val-size", "100", "--num-exits", "3", "--strategy", "osgd",
                 "--optimizer", "sgd+h1:lam=0.01", "--quiet", "--log", "tensorboard", "--out", str(tmp_path)]) == 0
    rows = assert_events_match(tmp_path)
    assert len(rows[0]["test_exit_acc"]) == 3 and rows[0]["lam"] == 0.01
    assert {"test_exit_acc/0", "test_exit_acc/2"} <= set(read_events(tmp_path / "tensorboard"))
