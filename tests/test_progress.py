"""What a run shows and logs: plain lines off a terminal, tqdm bars on one, nothing when quiet;
namespaced scalars in TensorBoard event files read back exactly; a failing or missing sink is a
warning and the run goes on; `ami --help` names every subcommand and each one's help is complete."""

from __future__ import annotations

import io
import json
import struct
import warnings

import pytest

from ami import cli, logsinks
from ami.config import LogConfig
from ami.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_each_chunk_is_one_plain_line(tmp_path):
    out = io.StringIO()
    progress = Progress(tmp_path, stream=out)
    progress.advance("train", 10, 30, "updates", "pred 0.1000")
    progress.advance("train", 20, 30, "updates", "pred 0.0500")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("train: 10/30 updates (0/s, ETA ?) pred 0.1000")  # no progress yet in this call
    assert lines[1].startswith("train: 20/30 updates (") and lines[1].endswith(" s) pred 0.0500")
    assert "\r" not in out.getvalue()


def test_on_a_terminal_a_phase_is_a_bar_with_rate_and_eta(tmp_path):
    out = Terminal()
    with Progress(tmp_path, stream=out) as progress:
        progress.advance("online", 1000, 4000, "env steps", "return 12.0")
        progress.say("eval: 1000 env steps: return 15.0 +- 1.0")
        progress.advance("online", 4000, 4000, "env steps", "return 20.0")
    text = out.getvalue()
    assert "\r" in text  # redrawn in place
    assert "online:" in text and "4.00k/4.00k" in text and "env steps/s" in text
    assert "return 20.0" in text and "eval: 1000 env steps: return 15.0 +- 1.0" in text
    assert "<" in text  # tqdm's elapsed<remaining


def test_quiet_prints_nothing_and_still_writes_the_record(tmp_path):
    out = Terminal()
    progress = Progress(tmp_path, quiet=True, stream=out)
    progress.advance("train", 5, 10, "updates")
    with progress.phase("compile", report=True):
        pass
    progress.say("hello")
    progress.log({"phase": "train", "updates": 5, "pred_loss": 0.5})
    assert out.getvalue() == ""
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["pred_loss"] == 0.5


def test_a_blocking_phase_counts_its_seconds_on_a_terminal_and_reports_once(tmp_path):
    import time

    out = Terminal()
    with Progress(tmp_path, stream=out).phase("compile and first chunk", report=True):
        time.sleep(1.2)
    text = out.getvalue()
    assert "compile and first chunk: 00:0" in text  # the ticking line
    assert text.rstrip().splitlines()[-1].startswith("compile and first chunk: 1.")
    plain = io.StringIO()
    with Progress(tmp_path, stream=plain).phase("collect"):
        pass
    assert plain.getvalue() == ""


def test_tags_put_each_key_in_its_namespace():
    assert logsinks.tag("online", "pred_loss") == "train/pred_loss"
    assert logsinks.tag("online", "train_return") == "env/train_return"
    assert logsinks.tag("train", "z_rank") == "train/z_rank"
    assert logsinks.tag("eval", "return") == "eval/return"
    assert logsinks.tag("summary", "mean_return") == "eval/mean_return"
    assert logsinks.tag("plan", "gap") == "plan/gap"
    assert logsinks.tag("collect", "seconds") == "env/seconds"
    assert logsinks.tag("online", "eval/return") == "eval/return"  # already namespaced


def test_scalars_take_the_step_and_leave_out_counters_text_and_nonfinite_values():
    row = {"wall_time_s": 3.0, "phase": "online", "env_steps": 2000, "updates": 500, "pred_loss": 0.25}
    row |= {"status": "x", "ok": True, "bad": float("nan"), "list": [1, 2], "train_return": 7}
    assert logsinks.scalars(row) == (2000, {"train/pred_loss": 0.25, "env/train_return": 7.0})
    assert logsinks.scalars({"phase": "train", "updates": 40, "z_std": 1.0}) == (40, {"train/z_std": 1.0})
    assert logsinks.scalars({"phase": "resume"}) == (0, {})


def _events(folder) -> dict[str, list[tuple[int, float]]]:
    """Scalars of the TFRecord event files in `folder`, by tag: [(step, value)]."""
    from tensorboardX.proto import event_pb2

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at : at + 8])
            event = event_pb2.Event.FromString(data[at + 12 : at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def test_tensorboard_gets_every_row_as_namespaced_scalars(tmp_path):
    with Progress(tmp_path, log_cfg=LogConfig(), stream=io.StringIO()) as progress:
        progress.log({"phase": "online", "env_steps": 1000, "updates": 100, "pred_loss": 0.5, "train_return": 3.0})
        progress.log({"phase": "online", "env_steps": 2000, "updates": 200, "pred_loss": 0.25})
        progress.log({"phase": "eval", "env_steps": 2000, "return": 42.0, "return_std": 1.5})
    events = _events(tmp_path / "tensorboard")
    assert events["train/pred_loss"] == [(1000, 0.5), (2000, 0.25)]
    assert events["env/train_return"] == [(1000, 3.0)]
    assert events["eval/return"] == [(2000, 42.0)] and events["eval/return_std"] == [(2000, 1.5)]
    assert not any(tag.endswith(("env_steps", "updates", "wall_time_s")) for tag in events)


def test_tensorboard_off_writes_no_event_files(tmp_path):
    with Progress(tmp_path, log_cfg=LogConfig(tensorboard=False), stream=io.StringIO()) as progress:
        progress.log({"phase": "train", "updates": 1, "pred_loss": 0.5})
    assert not (tmp_path / "tensorboard").exists()


class Broken:
    def write(self, step, values, wall_time):
        raise OSError("disk full")

    def close(self):
        raise AssertionError("a dropped sink is not closed")


def test_a_failing_sink_is_dropped_with_a_warning_and_the_record_goes_on(tmp_path):
    progress = Progress(tmp_path, stream=io.StringIO())
    progress.sinks = logsinks.Fanout([Broken()])
    with pytest.warns(RuntimeWarning, match="Broken is off for this run: OSError: disk full"):
        progress.log({"phase": "train", "updates": 1, "pred_loss": 0.5})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        progress.log({"phase": "train", "updates": 2, "pred_loss": 0.4})
        progress.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["updates"] for r in rows] == [1, 2]


def test_wandb_without_its_package_is_a_warning_not_a_stopped_run(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb":
            raise ModuleNotFoundError("No module named 'wandb'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    with pytest.warns(RuntimeWarning, match=r"Weights & Biases \(pip install 'ami\[wandb\]'\) is off"):
        sinks = logsinks.open_sinks(tmp_path, LogConfig(wandb=True))
    assert [type(s).__name__ for s in sinks] == ["TensorBoard"]
    for sink in sinks:
        sink.close()


def test_help_lists_every_subcommand_and_each_help_is_complete(capsys):
    parser = cli.build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    top = capsys.readouterr().out
    commands = parser._subparsers._group_actions[0].choices
    assert {"train", "eval", "plan", "envs", "rollout"} <= set(commands)
    for name, sub in commands.items():
        assert name in top
        assert sub.description, f"`ami {name} --help` has no description"
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"`ami {name}`: {action.dest} has no help"
