"""Offline pipeline (torch): the WaveNet autoencoder, datasets, training, and sample-bank rendering."""
