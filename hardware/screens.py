"""The OLED's screens: which one shows (pure, time-injected) and their pictures, 128x64 1-bit PIL images drawn
the same for the SSD1306 and the desktop simulator. Pillow is imported only when a picture is drawn."""
from __future__ import annotations

from hardware.frame import GRID

WIDTH, HEIGHT = 128, 64
TIMEOUT_S = 1.0  # a transient screen returns to home after this long without a change (as the original)
PAD_X, PAD_Y, CELL = 39, 7, 5  # the home screen's 11x11 dot grid, as the original draws it
_STAGES = ("ATTACK", "DECAY", "SUSTAIN", "RELEASE")


class ScreenState:
    """Home unless a control changed in the last TIMEOUT_S seconds; `show` names the transient screen."""

    def __init__(self, timeout: float = TIMEOUT_S):
        self.timeout = timeout
        self.kind, self.data, self._until = "home", {}, 0.0

    def show(self, kind: str, now: float, duration: float | None = None, **data) -> None:
        """Show a transient screen for `duration` seconds (default: the timeout) unless something replaces it."""
        self.kind, self.data, self._until = kind, data, now + (self.timeout if duration is None else duration)

    def home(self) -> None:
        self.kind, self.data = "home", {}

    def current(self, now: float) -> tuple[str, dict]:
        if self.kind != "home" and now >= self._until:
            self.home()
        return self.kind, self.data


def _font(size: int | None = None):
    from PIL import ImageFont
    return ImageFont.load_default(size) if size else ImageFont.load_default()


def _centered(draw, y: int, text: str, font) -> None:
    w = draw.textlength(text, font=font)
    draw.text(((WIDTH - w) / 2, y), text, fill=1, font=font)


def _bar(draw, value: float, y: int = 40) -> None:
    draw.rectangle((4, y, WIDTH - 5, y + 12), outline=1)
    draw.rectangle((6, y + 2, 6 + round((WIDTH - 13) * min(max(value, 0.0), 1.0)), y + 10), fill=1)


def render(kind: str, data: dict):
    """Draw one screen; `data` holds what that screen shows (see ScreenState.show calls in controls.py)."""
    from PIL import Image, ImageDraw
    img = Image.new("1", (WIDTH, HEIGHT), 0)
    d = ImageDraw.Draw(img)
    small, big = _font(), _font(14)
    if kind == "home":
        d.line((32, 0, 32, HEIGHT - 1), fill=1)
        d.line((WIDTH - 32, 0, WIDTH - 32, HEIGHT - 1), fill=1)
        labels = [a[:5] for a in data["corners"]]
        d.text((0, 0), labels[0], fill=1, font=small)
        d.text((WIDTH - d.textlength(labels[1], font=small), 0), labels[1], fill=1, font=small)
        d.text((0, HEIGHT - 11), labels[2], fill=1, font=small)
        d.text((WIDTH - d.textlength(labels[3], font=small), HEIGHT - 11), labels[3], fill=1, font=small)
        for gy in range(GRID):
            for gx in range(GRID):
                d.point((PAD_X + gx * CELL, PAD_Y + gy * CELL), fill=1)
        x, y = data["xy"]
        cx, cy = PAD_X + x * CELL * (GRID - 1), PAD_Y + y * CELL * (GRID - 1)
        d.ellipse((cx - 3, cy - 3, cx + 3, cy + 3), fill=1)
    elif kind == "instrument":
        names, sel = data["names"], data["selected"]
        _centered(d, 0, f"CORNER {data['corner'] + 1}", small)
        for row in (-1, 0, 1):
            _centered(d, 26 + row * 18, names[(sel + row) % len(names)], big)
        d.rectangle((0, 24, WIDTH - 1, 42), outline=1)
    elif kind == "envelope":
        a, dcy, s, r = (data[k] for k in ("attack", "decay", "sustain", "release"))
        _centered(d, 0, _STAGES[data["stage"]], small)
        x0, base, top, seg = 4, HEIGHT - 4, 16, (WIDTH - 8) / 4
        xa = x0 + a * seg
        xd = xa + dcy * seg
        xs = x0 + 3 * seg
        xr = xs + max(r, 0.02) * seg
        ys = base - s * (base - top)
        d.line([(x0, base), (xa, top), (xd, ys), (xs, ys), (xr, base)], fill=1, width=2)
    elif kind in ("position", "volume"):
        _centered(d, 6, kind.upper(), big)
        _bar(d, data["value"])
    elif kind == "message":  # a title and up to three short lines (USB import, a refused bank)
        _centered(d, 2, data["title"], big)
        for i, line in enumerate(data["lines"][:3]):
            _centered(d, 24 + i * 13, line, small)
    elif kind == "patch":
        _centered(d, 6, f"PATCH {data['index'] + 1}", big)
        _centered(d, 28, data["state"], small)
        if data.get("progress") is not None:
            _bar(d, data["progress"], 44)
    else:
        raise ValueError(f"unknown screen {kind!r}")
    return img
