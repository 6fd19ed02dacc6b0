"""MP4 camera streams of LeRobot v3 datasets, through PyAV (`pip install 'retain-registry[video]'`).

PyAV was chosen over torchcodec because its wheels carry their own FFmpeg (with the SVT-AV1
encoder and the dav1d decoder LeRobot's AV1 videos need), it encodes as well as decodes, and it
needs no torch: torchcodec's PyPI wheels link the CUDA build of torch and a system FFmpeg, so they
do not load beside the CPU torch this project pins (see docs/lerobot.md).

Decoding is deterministic: AV1, H.264 and HEVC decoders are bit-exact by specification, and the
conversion to RGB is FFmpeg's, so the same file gives the same pixels on the same build.
"""
from __future__ import annotations

import dataclasses
import os
from fractions import Fraction
from typing import Any, BinaryIO, Callable

import numpy as np

from registry.errors import corrupt, first_line, invalid

# What LeRobot writes (libsvtav1 -> av1, h264, hevc) plus VP9, which older datasets use.
SUPPORTED_CODECS = ("av1", "h264", "hevc", "vp9")
# The encoders behind `--vcodec`, with LeRobot's defaults: yuv420p, a keyframe every 2 frames, CRF 30.
ENCODERS = {"av1": "libsvtav1", "h264": "libx264", "hevc": "libx265"}
DEFAULT_VCODEC = "av1"
PIX_FMT, GOP, CRF = "yuv420p", 2, 30
# Requested frames further apart than this are reached by a seek rather than by decoding through.
SEEK_GAP_S = 5.0


def require_av() -> Any:
    try:
        import av
    except ImportError:
        raise invalid("this dataset stores camera streams as MP4 video, which needs PyAV; "
                      "install it with: pip install 'retain-registry[video]'") from None
    return av


class Mp4Writer:
    """One MP4 file of a camera stream: episodes appended back to back, each starting on a keyframe.

    Example:
        w = Mp4Writer(path, width=64, height=64, fps=10)
        start, end = w.add_episode(frames)   # (T, H, W, 3) uint8 -> seconds into the file
        w.close()
    """

    def __init__(self, path: "str | os.PathLike", width: int, height: int, fps: float, vcodec: str = DEFAULT_VCODEC):
        av = require_av()
        if vcodec not in ENCODERS:
            raise invalid(f"video codec {vcodec!r} is not one we write; use one of {', '.join(ENCODERS)}")
        if width % 2 or height % 2:
            raise invalid(f"video frames must have an even width and height ({PIX_FMT}); got {width}x{height}: "
                          f"use an even image size")
        # SVT-AV1 prints its configuration to stderr unless told otherwise.
        os.environ.setdefault("SVT_LOG", "1")
        self.path, self._av, self.fps = str(path), av, fps
        self._rate = Fraction(fps).limit_denominator(1001)
        self._out = av.open(self.path, "w", format="mp4")
        options = {"g": str(GOP), "crf": str(CRF)}
        if vcodec == "av1":
            options["preset"] = "12"
        self._stream = self._out.add_stream(ENCODERS[vcodec], rate=self._rate, options=options)
        self._stream.pix_fmt, self._stream.width, self._stream.height = PIX_FMT, width, height
        self.frames, self.bytes = 0, 0

    def add_episode(self, frames: np.ndarray) -> tuple[float, float]:
        """Append one episode's frames; returns its (from_timestamp, to_timestamp) in this file."""
        av = self._av
        start = self.frames
        for i, img in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            vf.pts = self.frames
            if i == 0:  # so a reader seeking to an episode never decodes the one before
                vf.pict_type = av.video.frame.PictureType.I
            self._mux(self._stream.encode(vf))
            self.frames += 1
        return float(start / self._rate), float(self.frames / self._rate)

    def _mux(self, packets) -> None:
        for packet in packets:
            self.bytes += packet.size
            self._out.mux(packet)

    def close(self) -> None:
        self._mux(self._stream.encode())
        self._out.close()

    def abort(self) -> None:
        try:
            self.close()
        except Exception:  # already failing; the caller removes the file
            pass


def video_info(opener: Callable[[], BinaryIO], shown: str) -> dict[str, Any]:
    """The stream facts LeRobot records under a video feature's "info" (codec, size, fps, pix_fmt)."""
    av = require_av()
    with opener() as fh, _open(av, fh, shown) as container:
        stream = _video_stream(container, shown)
        return {"video.height": stream.height, "video.width": stream.width, "video.codec": _codec(stream),
                "video.pix_fmt": stream.pix_fmt, "video.is_depth_map": False,
                "video.fps": _number(stream.guessed_rate or stream.average_rate or 0), "video.channels": 3,
                "has_audio": bool(container.streams.audio)}


@dataclasses.dataclass
class Decoded:
    """What decode_at found: frames in request order, and what it cost."""

    frames: np.ndarray  # (N, H, W, 3) uint8; black where nothing was found
    found: np.ndarray   # (N,) bool: a frame lay within the tolerance of the requested time
    first: float        # earliest and latest frame time decoded (seconds into the file)
    last: float
    decoded: int        # frames the decoder produced, requested or not


def decode_at(opener: Callable[[], BinaryIO], shown: str, timestamps: np.ndarray, tolerance_s: float,
              shape: tuple[int, int] | None = None) -> Decoded:
    """The frames nearest to `timestamps` (seconds into the file), decoding only what they need.

    Requested times more than SEEK_GAP_S apart are reached by a seek to the keyframe before them;
    frames in between are decoded (inter-frame coding needs them) but converted to RGB only when
    requested. A seek that lands past its target (a file whose index is off) is retried from the
    start of the file.
    """
    av = require_av()
    ts = np.asarray(timestamps, np.float64)
    order = np.argsort(ts, kind="stable")
    q = ts[order]
    best = np.full(q.size, np.inf)
    out: list = [None]
    seen = [np.inf, -np.inf, 0]

    def run(container, stream, start: float, end: float) -> float:
        """Decode from the keyframe before `start` until past `end`; the first frame time decoded."""
        tb, first = stream.time_base, np.inf
        container.seek(max(0, int(start / tb)), stream=stream, backward=True)
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            t = float(frame.pts * tb)
            first = min(first, t)
            seen[0], seen[1], seen[2] = min(seen[0], t), max(seen[1], t), seen[2] + 1
            lo, hi = np.searchsorted(q, t - tolerance_s, "left"), np.searchsorted(q, t + tolerance_s, "right")
            take = [j for j in range(lo, hi) if abs(q[j] - t) < best[j]]
            if take:
                img = frame.to_ndarray(format="rgb24")
                if out[0] is None:
                    out[0] = np.zeros((q.size,) + img.shape, np.uint8)
                for j in take:
                    out[0][j], best[j] = img, abs(q[j] - t)
            if t > end + tolerance_s:
                break
        return first

    with opener() as fh, _open(av, fh, shown) as container:
        stream = _video_stream(container, shown)
        codec = _codec(stream)
        if codec not in SUPPORTED_CODECS:
            raise invalid(f"{shown}: video codec {codec!r} is not supported; re-encode it as AV1 (LeRobot's "
                          f"default), H.264 or HEVC, e.g. ffmpeg -i in.mp4 -c:v libsvtav1 -pix_fmt yuv420p out.mp4")
        if shape is not None and (stream.height, stream.width) != tuple(shape):
            raise invalid(f"{shown}: frames are {stream.height}x{stream.width} but meta/info.json declares "
                          f"{shape[0]}x{shape[1]}; fix the feature's shape")
        try:
            for seg in _segments(q):
                first = run(container, stream, q[seg[0]], q[seg[-1]])
                if first > q[seg[0]] + tolerance_s and not np.isfinite(best[seg]).all():
                    run(container, stream, 0.0, q[seg[-1]])
        except av.error.FFmpegError as e:
            raise corrupt(f"{shown}: the video is damaged and does not decode ({first_line(e)}); "
                          f"re-download or re-encode it") from None
    frames = out[0]
    if frames is None:
        h, w = shape if shape is not None else (0, 0)
        frames = np.zeros((q.size, h, w, 3), np.uint8)
    result = np.empty_like(frames)
    result[order] = frames
    found = np.empty(q.size, bool)
    found[order] = np.isfinite(best)
    return Decoded(result, found, float(seen[0]), float(seen[1]), int(seen[2]))


def _segments(q: np.ndarray) -> list[np.ndarray]:
    if q.size == 0:
        return []
    cuts = np.nonzero(np.diff(q) > SEEK_GAP_S)[0] + 1
    return np.split(np.arange(q.size), cuts)


def _number(rate) -> "int | float":
    return int(rate) if rate == int(rate) else float(rate)


def _open(av, fh, shown: str):
    try:
        return av.open(fh, "r")
    except av.error.FFmpegError as e:
        raise corrupt(f"{shown} is not a readable MP4 video ({first_line(e)}); re-download or re-encode it") from None


def _video_stream(container, shown: str):
    if not container.streams.video:
        raise corrupt(f"{shown} holds no video stream; re-encode the camera's frames into it")
    return container.streams.video[0]


def _codec(stream) -> str:
    return stream.codec_context.codec.canonical_name
