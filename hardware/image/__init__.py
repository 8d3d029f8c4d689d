"""From repository to a working instrument: the device image builder, over-the-air deploy and USB bank import."""
