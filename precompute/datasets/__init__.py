"""Training data without downloads: the NSynth json/wav layout (reader and writer), SoundFont-rendered
NSynth-style datasets (FluidSynth), and the instrument-disjoint train/valid split. No torch here."""
