"""Pictures of a recorded run (tiny_dit.inside.recorder.RunRecord): what the app's "Inside the model" shows.

One module per view; everything is numpy + PIL (no plotting library needed) and returns PIL images,
uint8 frame arrays or Markdown strings, so it can be tested without a browser:

    drawing.py      palette, fonts, stacking, filmstrips, labelled_grid     what every view draws with
    patch_grid.py   patch_grid_image, latent_channels_image, token_arithmetic   spacetime patches (tubelets)
    attention.py    SlotLayout, picker_image, attention_heatmap, attention_matrix   self-attention maps
    trajectory.py   trajectory_images, noise_levels_chart                   x_t and pred_x0 over the passes
                    fast_comparison_images                                  the full and the fast model from one noise
                    forward_process_images, preview_image                   x_s = (1 - s) x0 + s noise; the live preview
    text_path.py    tokens_image, tokens_markdown, clip_score_chart         the text path
    adaln.py        adaln_plot                                              adaLN-Zero modulation over the steps
    words.py        word_heatmap_image, word_summary_image                  cross-attention per word

Layer: part of tiny_dit.inside (imports the DiT, data and inside only).
"""
