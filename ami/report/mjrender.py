"""MuJoCo frames from recorded joint positions, rendered offscreen in a child process.

MuJoCo picks its OpenGL backend once, when `mujoco` is first imported, from `MUJOCO_GL`;
a training process has long imported it (often with no backend that works headless), and a
crashing GL driver should not take the run with it. So `render` saves the model (MJB) and
the snapshots into a temporary folder and runs this module as a script in a fresh Python with
`MUJOCO_GL=egl` (unless the caller set `MUJOCO_GL`): for each frame it copies `qpos` (and the
mocap poses) into an `MjData`, runs `mj_forward` and renders with `mujoco.Renderer` from the
model's first camera (the free camera when it has none).

Headless EGL on a machine without a GPU is Mesa's software renderer: Debian's `libegl1`,
`libegl-mesa0` and `libgl1-mesa-dri`; `MUJOCO_GL=osmesa` needs `libosmesa6` instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

WIDTH, HEIGHT = 320, 240
TIMEOUT_S = 600.0


def render(model, snapshots: dict[str, np.ndarray], width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """Frames `[T, H, W, 3]` uint8 of `model` (a `mujoco.MjModel`) at `snapshots`: `qpos [T, nq]`
    and optionally `mocap_pos [T, M, 3]`, `mocap_quat [T, M, 4]`. `RuntimeError` (with the child's
    message) when MuJoCo cannot render here."""
    import mujoco

    qpos = np.asarray(snapshots["qpos"])
    if qpos.ndim != 2 or qpos.shape[1] != model.nq:
        raise ValueError(f"render: qpos must be [T, {model.nq}], got {list(qpos.shape)}")
    env = dict(os.environ)
    env.setdefault("MUJOCO_GL", "egl")
    with tempfile.TemporaryDirectory(prefix="ami-mjrender-") as tmp:
        tmp = Path(tmp)
        mujoco.mj_saveModel(model, str(tmp / "model.mjb"))
        np.savez(tmp / "snapshots.npz", **{k: np.asarray(v, np.float64) for k, v in snapshots.items()})
        command = [sys.executable, "-m", "ami.report.mjrender", str(tmp), str(width), str(height)]
        try:
            done = subprocess.run(command, env=env, capture_output=True, timeout=TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"MuJoCo rendering took over {TIMEOUT_S:.0f} s") from e
        if done.returncode != 0 or not (tmp / "frames.npy").exists():
            tail = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"MuJoCo could not render (MUJOCO_GL={env['MUJOCO_GL']}): {' '.join(tail)}")
        return np.load(tmp / "frames.npy")


def _render_folder(folder: Path, width: int, height: int) -> None:
    """The child's work: `folder/model.mjb` and `snapshots.npz` -> `folder/frames.npy`."""
    import mujoco

    model = mujoco.MjModel.from_binary_path(str(folder / "model.mjb"))
    snaps = dict(np.load(folder / "snapshots.npz"))
    data = mujoco.MjData(model)
    camera = 0 if model.ncam > 0 else -1
    frames = []
    with mujoco.Renderer(model, height, width) as renderer:
        for t in range(snaps["qpos"].shape[0]):
            data.qpos[:] = snaps["qpos"][t]
            for name in ("mocap_pos", "mocap_quat"):
                if name in snaps and model.nmocap:
                    getattr(data, name)[:] = snaps[name][t]
            mujoco.mj_forward(model, data)
            renderer.update_scene(data, camera=camera)
            frames.append(renderer.render().copy())
    np.save(folder / "frames.npy", np.stack(frames).astype(np.uint8))


if __name__ == "__main__":
    _render_folder(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
