"""The single `nsynth` command. Subcommands import their module only when run, so the device side
(no torch) and `nsynth --help` stay fast and light."""
from __future__ import annotations

import argparse
import importlib
import sys

from hardware.errors import HardwareError
from nsynth.errors import NsynthError

# name -> ("module:configure", one-line help). `configure(parser)` adds the arguments and sets `func`.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("nsynth.demo:configure_demo", "the built-in default: render a small bank, play a phrase to a WAV"),
    "encode": ("precompute.commands:configure_encode", "encode a WAV into embeddings [frames, 16] (.npy)"),
    "decode": ("precompute.commands:configure_decode", "decode embeddings (.npy) into a 16 kHz WAV"),
    "model new": ("precompute.commands:configure_model_new", "write an initialised run folder for a preset"),
    "model info": ("precompute.commands:configure_model_info", "print a run folder's config and parameter count"),
    "dataset soundfont": ("precompute.datasets.soundfont:configure",
                          "render an NSynth-style dataset (train/, valid/) from a SoundFont with FluidSynth"),
    "dataset pack": ("precompute.datasets.pack:configure",
                     "pack a dataset's notes as mu-law codes into one compressed file (training on another box)"),
    "corners check": ("precompute.corners:configure_check",
                      "load corner instruments (WAV folder, sf2:, nsynth:) and report what was filled"),
    "render": ("precompute.render.render:configure",
               "render a bank from four corner instruments with a model (resumable; torchrun / --ray to scale out)"),
    "timbre-map": ("precompute.render.timbre_map:configure", "draw a bank's grid as spectrograms (PNG)"),
    "export-onnx": ("precompute.commands:configure_export_onnx", "export the encoder and one-step decoder to ONNX"),
    "import-magenta": ("precompute.magenta.commands:configure",
                       "import Magenta's released NSynth checkpoint (model.ckpt-200000) into a run folder"),
    "train": ("precompute.train:configure", "train (or resume) a model on an NSynth-layout dataset"),
    "bank verify": ("device.bank_commands:configure_verify", "check a bank fully (manifest, sizes, loops, sha256)"),
    "bank inspect": ("device.bank_commands:configure_inspect", "print a bank's manifest summary"),
    "bank import-original": ("device.original:configure",
                             "import the original NSynth Super's sound files (.bin), one bank per combination"),
    "bank export-sfz": ("device.sfz:configure", "export a bank as an SFZ instrument (WAVs + .sfz) for samplers"),
    "play": ("device.play:configure_play", "play a bank live from MIDI (USB or DIN) and the control board"),
    "render-midi": ("device.offline:configure_render_midi", "render a MIDI file through the engine to a WAV"),
    "engine warm": ("device.audio_host:configure_warm",
                    "compile the engine's inner loop and the audio host's shared-memory code into numba's on-disk "
                    "cache (done at install time)"),
    "board monitor": ("hardware.commands:configure_monitor", "check the controller board, switches and OLED (or sim)"),
    "bank import": ("hardware.image.bank_import:configure", "verify banks from a USB stick or folder, install atomically"),
    "image build": ("hardware.image.build:configure", "customise a Raspberry Pi OS Lite image into an instrument"),
    "deploy": ("hardware.image.deploy:configure", "update a running instrument over SSH (rolls back on failure)"),
}


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: nsynth COMMAND [args]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`nsynth COMMAND --help` for a command's arguments."]
    return "\n".join(lines)


def _lookup(argv: list[str]) -> tuple[str, list[str]]:
    if len(argv) >= 2 and f"{argv[0]} {argv[1]}" in COMMANDS:
        return f"{argv[0]} {argv[1]}", argv[2:]
    if argv and argv[0] in COMMANDS:
        return argv[0], argv[1:]
    raise KeyError(argv[0] if argv else "")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    try:
        name, rest = _lookup(argv)
    except KeyError:
        groups = sorted({n.split()[0] for n in COMMANDS if " " in n})
        hint = f" (`nsynth {argv[0]}` has subcommands)" if argv[0] in groups else ""
        print(f"nsynth: unknown command {' '.join(argv[:2])!r}{hint}\n\n{_usage()}", file=sys.stderr)
        return 2
    target, help_ = COMMANDS[name]
    module, func = target.split(":")
    parser = argparse.ArgumentParser(prog=f"nsynth {name}", description=help_)
    getattr(importlib.import_module(module), func)(parser)
    args = parser.parse_args(rest)
    try:
        return int(args.func(args) or 0)
    except (NsynthError, HardwareError) as e:
        print(f"nsynth {name}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"nsynth {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
