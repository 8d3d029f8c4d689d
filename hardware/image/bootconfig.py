"""Boot partition text for the instrument (DESIGN.md, "Pi header" and "Boot config"): config.txt overlays and a
cmdline.txt without the serial console (the UART carries DIN MIDI at 31,250 baud)."""
from __future__ import annotations

import re

BEGIN, END = "# --- nsynth (written by nsynth image build) ---", "# --- end nsynth ---"
CONFIG_LINES = [
    "[all]",
    "dtparam=audio=off",              # no on-board audio: the PCM512x DAC on I2S is the sound card
    "dtoverlay=iqaudio-dac",
    "dtparam=i2c_arm=on",
    "dtparam=i2c_arm_baudrate=640000",
    "enable_uart=1",
    "dtoverlay=miniuart-bt",          # Bluetooth on the mini UART, the PL011 (/dev/ttyAMA0) for MIDI
    "dtoverlay=midi-uart0",           # 31,250 baud on UART0
]
MODULES = ["i2c-dev"]
SERIAL_CONSOLES = re.compile(r"^console=(serial\d|ttyAMA\d|ttyS\d)(,.*)?$")


def patch_config_txt(text: str) -> str:
    """config.txt with on-board/HDMI audio off and our block appended (replacing an earlier one)."""
    text = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?", "", text, flags=re.S)
    out = []
    for line in text.splitlines():
        if re.fullmatch(r"\s*dtparam=audio=on\s*", line):
            line = "#" + line.strip() + "  # disabled by nsynth"
        elif re.fullmatch(r"\s*dtoverlay=vc4-kms-v3d\s*", line):
            line = line.strip() + ",noaudio"
        out.append(line)
    while out and not out[-1].strip():
        out.pop()
    return "\n".join(out + ["", BEGIN, *CONFIG_LINES, END]) + "\n"


def patch_cmdline(text: str) -> str:
    """cmdline.txt (one line) without serial consoles."""
    tokens = [t for t in text.split() if not SERIAL_CONSOLES.match(t)]
    return " ".join(tokens) + "\n"

