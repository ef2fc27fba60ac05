"""`ami report`: the self-contained HTML page of a run, its parts, and the page in a real browser.

A tiny real Two-Rooms run is trained once (about 30 s on 2 cores); the page is written from
it and checked for its sections, its charts, its clip (decoded back into frames) and for any
URL at all. The browser test opens it in headless Chromium (skipped where `/usr/bin/chromium`
is missing; CI installs Debian's `chromium`) and reads what the page's own script wrote into
the DOM after load: the clip's readyState and duration, the images' sizes and every
Content-Security-Policy violation (a page with an external image proves those are caught).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from ami import cli
from ami.report import curves, draw, probe, rundir, svg, video, write_report
from ami.report.page import SCRIPT, csp

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml"
TINY = [
    "perception.hidden=[32,32]",
    "world_model.hidden=[32,32]",
    "critic.hidden=[32,32]",
    "train.batch_size=32",
    "critic.batch_size=32",
    "data.num_envs=32",
    "data.steps_per_env=100",
    "train.updates=200",
    "train.chunk=100",
    "eval.episodes=4",
    "eval.controllers=[learned]",
    "eval.budget=small",
    "planner.iterations=5",
    "planner.restarts=2",
    "log.tensorboard=false",
    "log.report=false",
]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
STEPS = 30  # filmed steps: a short clip keeps the test fast


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished tiny `ami train` run on Two-Rooms."""
    path = tmp_path_factory.mktemp("report") / "run"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["train", str(QUICKSTART), *TINY, "--run-dir", str(path)])
    assert code == 0, out.getvalue()
    return path


@pytest.fixture(scope="module")
def page(run_dir, tmp_path_factory) -> tuple[Path, str]:
    """The report of `run_dir` with one filmed episode as an animated WebP: `(path, text)`."""
    path = write_report(
        run_dir, out=tmp_path_factory.mktemp("page") / "report.html", episodes=1, max_steps=STEPS, video_format="webp"
    )
    return path, path.read_text()


def clip_bytes(text: str, mime: str) -> bytes:
    found = re.search(rf'src="data:{mime};base64,([A-Za-z0-9+/=]+)"', text)
    assert found, f"no {mime} clip in the page"
    return base64.b64decode(found.group(1))


# --- the page -------------------------------------------------------------------------------


def test_page_holds_config_summary_curves_and_clip(run_dir, page):
    path, text = page
    assert path.name == "report.html" and text.startswith("<!DOCTYPE html>")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert f"<td>{summary['success_rate']:.4g}</td>" in text
    config = text[text.index('<pre id="config">') :]
    assert "two_rooms" in config and "contrastive_weight: 3.0" in config and "updates: 200" in config
    assert 'id="status">finished<' in text and 'id="unfinished"' not in text
    # curves: losses and both collapse monitors, each against updates and against wall-clock time
    for title in ("losses", "collapse monitor: z_std", "collapse monitor: z_rank"):
        assert text.count(f'aria-label="{title}"') == 2, title
    assert text.count(">updates</text>") >= 3 and text.count(">wall-clock time (s)</text>") >= 3
    assert re.search(r'data-label="pred_loss" data-points="2"', text)  # 200 updates in chunks of 100
    # the clip: STEPS + 1 frames of the arena, with the planner's path overlaid
    frames = Image.open(io.BytesIO(clip_bytes(text, "image/webp")))
    assert frames.n_frames == STEPS + 1 and frames.size == (draw.SIZE, draw.SIZE)
    assert 'id="overlay-note"' in text and "nearest-neighbour probe" in text
    assert 'id="episode-energy"' in text  # the plans' energies along the episode
    assert 'id="no-plan"' in text  # `ami plan` has not run


def test_page_loads_nothing(page):
    _, text = page
    assert "http://" not in text and "https://" not in text
    assert not re.search(r'(src|href)="(?!data:)', text), "a resource that is not a data: URI"
    assert f'content="{csp()}"' in text and "default-src 'none'" in csp()
    assert text.count("<script>") == 1 and SCRIPT in text  # the one script the policy's hash allows


def test_webm_clip(run_dir, tmp_path):
    if not video.has_webm():
        pytest.skip("imageio-ffmpeg is not installed (pip install 'ami[video]')")
    path = write_report(
        run_dir, out=tmp_path / "r.html", episodes=2, max_steps=8, video_format="webm", clips_dir=tmp_path
    )
    text = path.read_text()
    assert text.count('<video class="clip"') == 2
    assert clip_bytes(text, "video/webm")[:4] == b"\x1a\x45\xdf\xa3"  # the EBML header of a WebM file
    assert (tmp_path / "episode_0.webm").read_bytes() == clip_bytes(text, "video/webm")
    assert (tmp_path / "episode_1.webm").exists()


def test_unfinished_run_says_so(run_dir, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(run_dir, partial, ignore=shutil.ignore_patterns("summary.json", "checkpoints"))
    rows = (partial / "metrics.jsonl").read_text().splitlines()
    (partial / "metrics.jsonl").write_text("\n".join(rows[:2]) + '\n{"phase": "tr')  # killed mid-write
    text = write_report(partial).read_text()
    assert (partial / "report.html").exists()
    assert 'id="unfinished"' in text and "no <code>summary.json</code>" in text
    assert "100 of 200 updates" in text and "no checkpoint saved yet" in text
    assert 'id="no-video">No video: no checkpoint yet' in text
    assert 'id="status">unfinished<' in text


def test_plan_figures_are_embedded(run_dir, tmp_path):
    run = tmp_path / "planned"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("checkpoints"))
    (run / "plan").mkdir()
    png = io.BytesIO()
    Image.new("RGB", (7, 5), (255, 0, 0)).save(png, format="PNG")
    (run / "plan" / "traces.png").write_bytes(png.getvalue())
    table = [{"planner": "cem", "success_learned": 0.5, "success_true_dynamics": 0.75}]
    (run / "plan" / "landscape.json").write_text(json.dumps({"table": table}))
    text = write_report(run, video=False).read_text()
    assert "data:image/png;base64," + base64.b64encode(png.getvalue()).decode() in text
    assert "<td>cem</td><td>0.5</td><td>0.75</td>" in text and 'id="no-plan"' not in text
    assert 'id="no-video">No video: not asked for' in text


def test_plan_figures_are_those_ami_plan_writes():
    from ami.diagnostics import plots

    assert list(rundir.PLAN_FIGURES) == list(plots.FIGURES)


def test_cli_report(run_dir, tmp_path, capsys):
    out = tmp_path / "cli.html"
    assert cli.main(["report", str(run_dir), "--no-video", "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out and "Learning curves" in out.read_text()
    with pytest.raises(SystemExit):
        cli.main(["report", str(run_dir), "--episodes", "0"])
    assert cli.main(["report", str(tmp_path / "nowhere")]) == 2  # not a run directory: a clear error


# --- the recorded episodes are the evaluation's -------------------------------------------------


def test_recorded_episodes_are_the_evaluation_episodes(run_dir):
    from ami.evaluate import run_episodes
    from ami.replan import load_run
    from ami.report import episodes, scenes
    from ami.run import make_env

    cfg, agent, state = load_run(run_dir)
    env = make_env(cfg, auto_reset=False)
    scene = scenes.scene_for(env)
    assert scene.kind == "two_rooms" and scene.planar is not None
    n, steps, key = cfg.eval.episodes, 12, jax.random.key(cfg.eval.seed)
    rec = episodes.make_recorder(agent, env, scene, num_envs=n, num_steps=steps, eval_episodes=n)(state, key)
    ref = jax.jit(lambda s, k: run_episodes(agent, s, env, k, n, steps, "learned"))(state, key)
    np.testing.assert_allclose(np.mean(np.sum(rec.reward * rec.alive, axis=0)), float(ref["return"]), rtol=1e-5)
    np.testing.assert_array_equal(np.max(rec.success, axis=0).mean(), float(ref["success_any"]))
    assert rec.frames.shape == (steps + 1, n, 2) and rec.imagined.shape[:2] == (steps, n)
    # the true-dynamics path of the plan starts one move (max_step per axis) from where the agent stands
    first_move = np.abs(rec.true_path[:, :, 0] - rec.frames[:-1])
    assert np.all(first_move <= env.unwrapped.max_step + 1e-6)
    # the plan executed: its first step is where the agent went next
    np.testing.assert_allclose(rec.true_path[:, :, 0], rec.frames[1:], atol=1e-6)


# --- the pieces -------------------------------------------------------------------------------


def test_nice_ticks_cover_the_range():
    assert svg.nice_ticks(100, 300) == [100, 150, 200, 250, 300]
    assert svg.nice_ticks(-131.4, -76.0) == [-140, -120, -100, -80, -60]
    assert svg.nice_ticks(0, 1e5) == [0, 2e4, 4e4, 6e4, 8e4, 1e5]
    assert svg.format_number(25000) == "25k" and svg.format_number(0.05) == "0.05" and svg.format_number(0) == "0"


def test_line_chart_drops_non_finite_points():
    x = np.arange(5.0)
    chart = svg.line_chart([svg.Series("a", x, np.array([1, np.nan, 3, np.inf, 5.0]))], title="t", xlabel="x")
    assert 'data-points="3"' in chart and chart.count("<polyline") == 1
    log = svg.line_chart([svg.Series("b", x, np.array([0.0, 1, 10, 100, 1000]))], title="t", xlabel="x", log_y=True)
    assert 'data-points="4"' in log and ">1000<" in log  # 0 has no logarithm
    empty = svg.line_chart([svg.Series("c", x, np.full(5, np.nan))], title="t", xlabel="x")
    assert "no data" in empty and "<polyline" not in empty


def test_online_runs_chart_returns_against_env_steps():
    rows = [
        {"phase": "online", "wall_time_s": 1.0, "env_steps": 1000, "updates": 0, "pred_loss": 0.0, "z_std": 0.0},
        {"phase": "online", "wall_time_s": 2.0, "env_steps": 2000, "updates": 500, "pred_loss": 0.5, "z_std": 0.9},
        {"phase": "eval", "wall_time_s": 3.0, "env_steps": 2000, "return": 12.0},
        {"phase": "resume", "wall_time_s": 4.0, "env_steps": 2000},
        {"phase": "online", "wall_time_s": 5.0, "env_steps": 3000, "updates": 1000, "pred_loss": 0.25, "q_mean": 3.0},
    ]
    rows[1]["train_return"], rows[4]["policy_loss"] = 9.0, -2.0
    assert curves.counter(rows) == "env_steps"
    main, other = curves.plan_charts(rows)
    assert [c.title for c in main] == ["losses", "policy_loss", "collapse monitor: z_std", "returns"]
    assert main[0].log_y and not main[1].log_y
    assert main[3].lines == (("train episodes", "train", "train_return"), ("evaluation", "eval", "return"))
    assert [c.title for c in other] == ["q_mean"]
    returns = curves.draw(rows, main[3], "env_steps")
    assert (
        'data-label="train episodes" data-points="1"' in returns
        and 'data-label="evaluation" data-points="1"' in returns
    )
    # the seed steps' row (no update yet, every scalar 0) is left out of the training charts
    assert 'data-label="pred_loss" data-points="2"' in curves.draw(rows, main[0], "wall_time_s")
    assert 'data-label="z_std" data-points="1"' in curves.draw(rows, main[2], "env_steps")
    assert curves.events(rows) == [rows[3]]


def test_read_run_refuses_a_folder_that_is_no_run(tmp_path):
    with pytest.raises(ValueError, match="not a run directory"):
        rundir.read_run(tmp_path)


def test_probe_decodes_grid_latents_to_their_positions():
    from ami.report.scenes import Planar

    planar = Planar(position=lambda s: s, goal=lambda s: s, observe=lambda p: jnp.stack([p[0], 2 * p[1], p[0] * p[1]]))
    pr = probe.make_probe(lambda params, obs: obs * params, 1.0, planar, size=8)
    points = probe.grid(8)[[0, 9, 63]]
    z = jax.vmap(planar.observe)(jnp.asarray(points))
    np.testing.assert_array_equal(probe.decode(pr, z[None]), points[None])
    assert probe.probe_error(pr, z, jnp.asarray(points)) == 0.0
    assert probe.probe_error(pr, z, jnp.asarray(points) + jnp.array([0.3, 0.4])) == pytest.approx(0.5, abs=1e-6)


def test_planar_frames_draw_agent_goal_and_wall():
    positions = np.array([[-0.5, 0.0], [-0.45, 0.0]])
    frames = draw.planar_frames(
        positions, np.array([0.5, 0.5]), success_radius=0.1, walls=draw.two_rooms_walls(0.0, 0.3)
    )
    assert frames.shape == (2, draw.SIZE, draw.SIZE, 3) and frames.dtype == np.uint8
    px = lambda xy: tuple(round(float(v)) for v in draw.to_pixels(np.array(xy)))  # noqa: E731
    (ax, ay), (gx, gy), (wx, wy) = px([-0.5, 0.0]), px([0.5, 0.5]), px([0.0, -0.6])
    assert tuple(frames[0, ay, ax]) == draw.AGENT and tuple(frames[1, ay, ax]) != draw.AGENT  # the agent moved
    assert tuple(frames[0, gy, gx]) == (205, 235, 205)  # inside the goal disc
    assert tuple(frames[0, wy, wx]) == draw.WALL and tuple(frames[0, px([0.0, 0.0])[1], wx]) == draw.BACKGROUND


def test_pendulum_frames_put_the_bob_where_the_angle_says():
    frames = draw.pendulum_frames(np.array([0.0, np.pi / 2]), size=100)
    centre, length = 50, 0.38 * 100
    assert tuple(frames[0, round(centre - length), centre]) == draw.AGENT  # upright: the bob above the pivot
    assert tuple(frames[1, centre, round(centre + length)]) == draw.AGENT  # a quarter turn: to the right
    assert tuple(frames[1, round(centre - length), centre]) != draw.AGENT


def test_scenes_of_the_native_envs():
    import envs
    from ami.report import scenes

    kinds = {name: scenes.scene_for(envs.make(name)) for name in ("two_rooms", "point_mass", "pendulum")}
    assert {k: s.kind for k, s in kinds.items()} == {
        "two_rooms": "two_rooms",
        "point_mass": "point_mass",
        "pendulum": "pendulum",
    }
    assert kinds["two_rooms"].planar is not None and kinds["pendulum"].planar is None
    assert kinds["pendulum"].fps == pytest.approx(20.0)  # dt 0.05 s
    state = envs.make("point_mass").reset(jax.random.key(0))
    planar = kinds["point_mass"].planar
    np.testing.assert_array_equal(planar.goal(state), state.info[envs.GOAL_OBS][:2])
    np.testing.assert_array_equal(planar.observe(jnp.array([0.25, -0.5])), [0.25, -0.5, 0.0, 0.0])
    assert scenes.scene_for(object()) is None


def test_clips_decode_back():
    frames = np.zeros((6, 24, 32, 3), np.uint8)
    for t in range(6):
        frames[t, :, 4 * t : 4 * t + 4] = 255
    for fmt in ("webp", "gif"):
        clip = video.encode(frames, 10.0, fmt)
        image = Image.open(io.BytesIO(clip.data))
        assert image.n_frames == 6 and image.size == (32, 24) and clip.mime == f"image/{fmt}"
        image.seek(3)
        assert (
            np.asarray(image.convert("RGB"))[12, 13].min() > 200 and np.asarray(image.convert("RGB"))[12, 2].max() < 60
        )
    with pytest.raises(ValueError, match="uint8"):
        video.encode(frames.astype(np.float32), 10.0, "gif")
    with pytest.raises(ValueError, match="format"):
        video.encode(frames, 10.0, "mp4")


# --- in a real browser ------------------------------------------------------------------------


def chromium(args: list[str], tmp_path: Path, timeout: float = 90.0) -> subprocess.CompletedProcess:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (Debian: apt-get install chromium)")
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    command = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=8000", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def dumped(path: Path, tmp_path: Path) -> str:
    done = chromium(["--dump-dom", path.as_uri()], tmp_path)
    assert done.returncode == 0 and "<body" in done.stdout, done.stderr[-2000:]
    return done.stdout


def test_browser_plays_the_clip_and_requests_nothing(run_dir, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (Debian: apt-get install chromium)")
    fmt = "webm" if video.has_webm() else "webp"
    path = write_report(run_dir, out=tmp_path / "report.html", episodes=1, max_steps=STEPS, video_format=fmt)
    dom = dumped(path, tmp_path)
    assert 'data-loaded="1"' in dom and "data-csp-violations" not in dom
    assert dom.count('<svg class="chart"') >= 6
    if fmt == "webm":
        state = re.search(r'<video class="clip"[^>]*data-ready-state="(\d)"[^>]*data-duration="([0-9.]+)"', dom)
        assert state, "the clip reported no readyState / duration"
        assert int(state.group(1)) >= 2 and float(state.group(2)) == pytest.approx((STEPS + 1) / 20.0, abs=0.1)
    else:
        assert re.search(rf'<img class="clip"[^>]*data-natural-width="{draw.SIZE}"', dom)
    shot = tmp_path / "shot.png"
    done = chromium([f"--screenshot={shot}", "--window-size=1100,1600", path.as_uri()], tmp_path)
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (1600, 1100) and pixels.std() > 10  # not a blank page


def test_browser_catches_a_request(page, tmp_path):
    _, text = page
    leaky = tmp_path / "leaky.html"
    leaky.write_text(text.replace("</h1>", '</h1><img src="http://127.0.0.1:9/x.png">', 1))
    dom = dumped(leaky, tmp_path)
    assert 'data-csp-violations="1"' in dom and "img-src http://127.0.0.1:9/x.png" in dom


# --- MuJoCo ---------------------------------------------------------------------------------


@pytest.mark.physics
@pytest.mark.slow
def test_mujoco_frames_of_reacher_goal():
    import envs
    from ami.report import mjrender, scenes

    env = envs.make("reacher_goal", auto_reset=False)
    scene = scenes.scene_for(env)
    assert scene.kind == "mujoco" and scene.fps == pytest.approx(25.0)
    state = jax.jit(env.reset)(jax.random.key(0))
    snap = jax.device_get(scene.snapshot(state))
    assert snap["qpos"].shape == (2,) and snap["mocap_pos"].shape == (1, 3)
    snaps = {k: np.stack([v, v]) for k, v in snap.items()}
    snaps["qpos"][1] += np.array([np.pi / 2, 0.0])  # the second frame: shoulder turned a quarter
    try:
        frames = mjrender.render(scene.model, snaps, width=160, height=120)
    except RuntimeError as e:  # CI must have headless OpenGL: this fails rather than skips
        pytest.fail(f"{e}; headless MuJoCo needs Debian's libegl1 libegl-mesa0 libgl1-mesa-dri")
    assert frames.shape == (2, 120, 160, 3) and frames.dtype == np.uint8 and frames[0].std() > 5
    assert np.abs(frames[0].astype(int) - frames[1].astype(int)).max() > 100  # the arm moved
