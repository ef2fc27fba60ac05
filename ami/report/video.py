"""Frames to an embeddable clip: VP9 WebM (for a `<video>` element) or an animated WebP / GIF.

* `webm`: VP9 in WebM through the ffmpeg binary bundled with `imageio-ffmpeg` (the optional
  `video` extra); plays in every Chromium build, Debian's included (which may lack H.264),
  with the browser's controls (pause, seek).
* `webp`, `gif`: animated images through Pillow (a core dependency), shown as `<img>`; no
  controls, but nothing to install. `gif` is what GitHub's README shows.

`encode(frames [T, H, W, 3] uint8, fps, fmt) -> Clip`; `"auto"` picks `webm` when
imageio-ffmpeg is installed, else `webp`.
"""

from __future__ import annotations

import base64
import io
import subprocess
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

FORMATS = ("auto", "webm", "webp", "gif")
MIME = {"webm": "video/webm", "webp": "image/webp", "gif": "image/gif"}
WEBM_CRF = 34  # VP9 constant quality (0 best, 63 worst): flat synthetic scenes stay sharp at this


class Clip(NamedTuple):
    """An encoded clip: its `format` (`webm`, `webp` or `gif`), bytes, frame count, size and rate."""

    format: str
    data: bytes
    frames: int
    width: int
    height: int
    fps: float

    @property
    def mime(self) -> str:
        return MIME[self.format]

    def data_uri(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"


def has_webm() -> bool:
    """Whether the `webm` format can be written (the `imageio-ffmpeg` package is importable)."""
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_format(fmt: str) -> str:
    """`fmt` with `auto` decided; `ValueError` for an unknown name or `webm` without imageio-ffmpeg."""
    if fmt not in FORMATS:
        raise ValueError(f"video format must be one of {FORMATS}, got {fmt!r}")
    if fmt == "auto":
        return "webm" if has_webm() else "webp"
    if fmt == "webm" and not has_webm():
        raise ValueError("video format 'webm' needs imageio-ffmpeg: pip install 'ami[video]' (or use webp / gif)")
    return fmt


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or frames.shape[0] < 1:
        raise ValueError(f"frames must be uint8 [T, H, W, 3] with T >= 1, got {frames.dtype} {list(frames.shape)}")
    return frames


def encode(frames: np.ndarray, fps: float, fmt: str = "auto") -> Clip:
    """`frames [T, H, W, 3]` uint8 played at `fps` frames per second, encoded as `fmt`."""
    frames, fmt = _check_frames(frames), resolve_format(fmt)
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if fmt == "webm":
        frames = _even(frames)
        data = _webm(frames, fps)
    else:
        data = _animated(frames, fps, fmt)
    t, h, w, _ = frames.shape
    return Clip(fmt, data, t, w, h, float(fps))


def _even(frames: np.ndarray) -> np.ndarray:
    """Frames cropped to even height and width (VP9 in yuv420p needs them)."""
    h, w = frames.shape[1:3]
    return frames[:, : h - h % 2, : w - w % 2]


def _webm(frames: np.ndarray, fps: float) -> bytes:
    import imageio_ffmpeg

    h, w = frames.shape[1:3]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.webm"
        command = [
            imageio_ffmpeg.get_ffmpeg_exe(),
            *("-hide_banner", "-loglevel", "error", "-y"),
            *("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", f"{fps:g}", "-i", "-"),
            *("-c:v", "libvpx-vp9", "-b:v", "0", "-crf", str(WEBM_CRF), "-pix_fmt", "yuv420p"),
            *("-deadline", "good", "-cpu-used", "4", "-row-mt", "1", "-an", str(path)),
        ]
        done = subprocess.run(command, input=np.ascontiguousarray(frames).tobytes(), capture_output=True, check=False)
        if done.returncode != 0 or not path.exists():
            raise RuntimeError(f"ffmpeg could not write the WebM clip: {done.stderr.decode(errors='replace')[-500:]}")
        return path.read_bytes()


def _animated(frames: np.ndarray, fps: float, fmt: str) -> bytes:
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    if fmt == "gif":  # one palette, from frames across the clip, keeps the colours steady
        picks = np.linspace(0, len(frames) - 1, min(len(frames), 8)).astype(int)
        palette = Image.fromarray(np.concatenate(frames[picks], axis=0)).quantize(64, Image.Quantize.MEDIANCUT)
        images = [im.quantize(palette=palette, dither=Image.Dither.NONE) for im in images]
    out = io.BytesIO()
    duration = max(round(1000.0 / fps), 20)  # ms per frame (browsers slow down faster GIFs)
    options = {"quality": 80, "method": 4} if fmt == "webp" else {"optimize": False, "disposal": 1}
    first, rest = images[0], images[1:]
    first.save(out, format=fmt.upper(), save_all=True, append_images=rest, duration=duration, loop=0, **options)
    return out.getvalue()
