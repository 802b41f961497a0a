"""Inside the model: a sampling run recorded, and the pictures and words that explain it.

    recorder.py           records a run: x_t, pred_x0, adaLN, CLIP scores (what the views read)
    geometry.py           how pixels become tokens for one pipeline: the sizes the views and checks read
    attention_maps.py     a run's self-attention maps, recomputed on demand (a small bounded cache)
    word_attention.py     which patches read which word (cross-attention per word)
    fast_comparison.py    the full model beside its fast (distilled) student, from the same noise
    views/                the drawing: every view of "Inside the model" as a picture, one module a view
    training_history.py   a model's training record: loss, evaluations, sample grids
    teaching.py           the teaching text the app shows beside each view

Layer: imports the DiT, data and inside; nothing from training or app.
"""
