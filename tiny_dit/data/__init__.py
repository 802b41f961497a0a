"""The clips a model learns from.

    shapes.py        the shapes world: clips rendered from nothing (the built-in training set), and its CLI
    videofolder.py   real clips: mp4 files + metadata.jsonl in the Hugging Face videofolder layout

Layer: imports the DiT's modules (tiny_dit.video) and nothing from training, inside or app.
"""
