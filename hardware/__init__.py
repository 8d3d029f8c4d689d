"""Board support for the NSynth Super controller board, switches and OLED, with simulated twins.

Pure, driver-free (importable with no driver library installed):
  frame     the controller's 16-byte frame: decode/verify, encode
  mapping   board state -> engine parameters (pot hysteresis, encoder unwrapping, touch glide)
  plausible frames that pass the checksum judged against the physics: touch jumps, controller resets
  debounce  switch debouncing; short press = load, 0.75 s hold = save
  corners   the four corners' instrument choices (from a bank folder or the original's settings.json)
  banks     corner choices -> bank name/path; BankSwitcher: swap only after the new bank opened and verified
  patches   the four patches, JSON written atomically
  import_status  the USB bank import's outcome (its status file) as an OLED message
  screens   which OLED screen shows, and its 128x64 picture (Pillow, imported when drawing)
  keys      the computer keyboard as a piano (the simulator)
Drivers (their libraries imported lazily, hardware always injected):
  controller  the STM32 at I2C 0x47 over smbus2, polled on its own thread
  switches    the encoder push switches on GPIO 5, 6, 13, 26 (RPi.GPIO or rpi-lgpio)
  oled        the SSD1306 at 0x3d through luma.oled, fed from its own thread
The twin: sim (a board, a panel and GPIO at the bus/GPIO edge) and simulator (the Tk window).
controls.BoardControls ties it together as a control source (`open_board_controls`); device/board_glue.py wires
it into `nsynth play --board ons|sim` (hardware never imports device).
"""
