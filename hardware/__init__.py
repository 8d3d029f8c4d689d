"""Board support for the NSynth Super controller board, switches and OLED, with simulated twins."""
