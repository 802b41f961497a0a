"""Training the three models, and measuring them.

    latent_cache.py        clips -> latents + text embeddings, once, so DiT training runs only the DiT (a CLI)
    loop.py                the one training loop (AdamW, EMA, log, atomic resumable checkpoints, precision)
    train.py               the DiT:         python -m tiny_dit.training.train
    train_clip.py          the tiny CLIP:   python -m tiny_dit.training.train_clip
    train_autoencoder.py   the autoencoder: python -m tiny_dit.training.train_autoencoder
    distill.py             a fast student of the DiT (1-4 passes, guidance built in): python -m tiny_dit.training.distill
    evaluate.py            the project's quality measures: python -m tiny_dit.training.evaluate

Layer: imports the DiT, data and training; nothing from inside or app (the views of a
finished run's training record live in tiny_dit.inside.training_history).
"""
