"""A raw MIDI 1.0 byte stream (DIN MIDI from a UART) -> mido messages.

mido's own `Parser` drops a message when a realtime byte lands inside it and does not implement running
status, both of which a DIN stream uses; this framer handles the stream rules and hands each complete channel
message to mido (`mido.Message.from_bytes`) to decode:
  - running status: data bytes after a complete channel message reuse its status byte;
  - realtime bytes (0xF8-0xFF) are allowed anywhere, even inside a message, and are ignored;
  - SysEx (0xF0 ... 0xF7, or ended by any status byte) is skipped; system common messages are skipped and
    cancel running status; stray data bytes are dropped.
"""
from __future__ import annotations

import mido

_SYSCOMMON_DATA = {0xF1: 1, 0xF2: 2, 0xF3: 1}


class MidiByteParser:
    def __init__(self) -> None:
        self._status = 0      # running status (0 = none)
        self._need = 0        # data bytes per message of this status
        self._data: list[int] = []
        self._sysex = False

    def feed(self, data: bytes | bytearray | memoryview) -> list[mido.Message]:
        """Consume bytes; return the complete channel messages they finished, in order."""
        out = []
        for b in bytes(data):
            if b < 0x80:
                if self._sysex or not self._status:
                    continue
                self._data.append(b)
                if len(self._data) == self._need:
                    if self._status < 0xF0:
                        out.append(mido.Message.from_bytes([self._status, *self._data]))
                    else:  # a system common message: skipped, no running status
                        self._status = 0
                    self._data = []
            elif b >= 0xF8:
                continue
            else:
                self._sysex = b == 0xF0
                self._data = []
                if b < 0xF0:
                    self._status, self._need = b, (1 if 0xC0 <= b < 0xE0 else 2)
                else:
                    self._need = _SYSCOMMON_DATA.get(b, 0)
                    self._status = b if self._need else 0
        return out
