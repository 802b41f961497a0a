"""The teaching text of the app: what each view shows and why, one paragraph per idea.

Kept beside the views (tiny_dit.inside.views draws the pictures, this file says what they mean), so
that app.py is only the page's layout and wiring. Markdown; the app shows each above its view.
The functions at the end write the Markdown that sums up one result (a run, a comparison, a view).
"""

from __future__ import annotations

import numpy as np

from tiny_dit.flow import is_guided
from tiny_dit.guiders import GUIDERS


INTRO = """# tiny-dit: Sora in miniature
A small text-to-video **diffusion transformer** (DiT) trained on a toy world of moving shapes. Type a prompt,
press *Generate*, and watch the clip form; then open **Inside the model** below to see that very run from the
inside. Everything runs on this machine's CPU.
"""

VIEW_TEXT = {
    "patch": (
        "Like ViT cuts an image into patches, the DiT cuts the clip into **spacetime patches (tubelets)**: a few "
        "consecutive frames of a small square. Each tubelet becomes one token, and the transformer only ever sees "
        "this sequence of tokens, plus a positional embedding that says where each one came from. The autoencoder "
        "first shrinks every frame into a small latent (latent diffusion); that is what makes the sequence short "
        "enough for a CPU."),
    "attention": (
        "Self-attention lets every token gather information from the other tokens: each row of the matrix is one "
        "query token's weights over all keys, and sums to 1. **Click a patch in any frame** to see where that token "
        "looks, over every frame: with full spacetime attention a token can follow the shape through time. Heads "
        "of one layer learn different patterns, and the maps change between noisy early steps and late ones."),
    "trajectory": (
        "Sampling starts from pure noise (noise level sigma = 1) and follows the velocity v the model predicts "
        "(rectified flow) down to sigma = 0, with the *sampler* chosen above (Euler: one step per pass; Heun: two "
        "passes a step); the chart shows the noise levels it visits. At every pass the prediction also gives a "
        "guess of the finished clip, **pred_x0 = x_t - sigma * v**: the layout appears first, details last."),
    "guidance": (
        "Class guidance (classifier-free guidance) runs the model with and without the prompt at every step and "
        "pushes the result away from the prompt-free prediction: **v = v_uncond + w (v_cond - v_uncond)**. "
        "w = 1 (or less) is the conditional model alone; a larger w follows the prompt more closely, at the cost "
        "of variety and, eventually, burnt edges: the formula extrapolates *past* the conditional prediction, and "
        "in the last, low-noise steps, where the model only sharpens the outline, that overshoot paints coloured "
        "fringes around the object (interval guidance stops guiding there). Compare the **methods** (each of "
        "interval, rescale, APG and CFG-Zero* changes the formula in one way) at the scale above, or several "
        "**scales** of the method above: same prompt, seed and starting noise, one clip each (this comparison "
        "runs the sampler again). Beside each clip's CLIP score (does it follow the prompt?) stand its **stray "
        "pixels**: the share of the frame far from the background but outside the object, the fringes."),
    "text": (
        "The prompt reaches the DiT through CLIP: it is cut into tokens (with start and end markers, padded to "
        "CLIP's fixed context length), and CLIP's text transformer turns them into one vector per token plus a "
        "pooled vector (the end token's). The pooled vector joins the noise level in adaLN; the per-token vectors "
        "are read by cross-attention. The CLIP score says how well each clip matches the prompt, as CLIP sees it "
        "(four frames woven into one image, so its image tower can see motion)."),
    "adaln": (
        "Each DiT block normalises its tokens, then **shifts and scales** them with vectors computed from the "
        "conditioning (noise level + pooled prompt), and **gates** each residual branch: adaptive LayerNorm. The "
        "gates start at zero when training begins (adaLN-**Zero**), so every block starts as the identity. The "
        "plot shows how strongly each block is modulated at each iteration of your run: the conditioning changes "
        "with the noise level."),
    "forward": (
        "Training adds noise to clean clips and asks the model to undo it: **x_s = (1 - s) x0 + s noise**, a "
        "straight line from the clip (s = 0) to pure noise (s = 1), taken in the autoencoder's latent space and "
        "decoded here to frames. The model learns the velocity along this line (noise - x0); sampling walks the "
        "line back. The clip is a rendered training-style clip of your prompt's shape, colour and motion."),
    "words": (
        "Cross-attention is the second road from the prompt into the DiT: in every block, each patch (query) reads "
        "the per-token CLIP states of the prompt (keys and values), and its weights over the tokens sum to 1. "
        "**Pick a word** to see, in every frame, how much each patch reads it: bright patches take much of their "
        "attention from that word. Does the shape's name light up on the shape, does 'left' follow the object? "
        "Word pieces are added up into words; the start and end tokens often soak up attention that no word needs."),
    "training": (
        "The model learned from rendered clips of moving shapes (the bundled one from random weights, on two "
        "CPU cores). During training it drew the same few prompts "
        "from the same starting noise at several points of the run: **slide through the snapshots** to see "
        "what changed as it learned. The curve is the "
        "training loss (how far the predicted clean clips were from the real ones; log scale), and, where the run "
        "was evaluated, how often a judge recognised the colour, shape and motion of its samples."),
}


SORA_TEXT = (
    "Sora's report shows one model doing more than text-to-video: images, animating an image, extending a clip "
    "forwards or backwards, connecting two clips, at any length and size. This model never learned any of that "
    "except images; the pipeline's `conditions` hold the frames you give at every step, put back on their noise "
    "path (RePaint-style), and the model denoises the other frames to fit them: attention lets every frame see "
    "the given ones. Pick a task and an example (or upload your own), press *Generate*: the given frames have a "
    "blue border in the result. The sampler is the one chosen on the Generate tab.")


MATRIX_TEXT = (
    "Each row is one query token, each column one key token, in (time slot, row, column) order: the white lines "
    "separate the time slots. Blocks on the diagonal are attention **within** a time slot (space), blocks off the "
    "diagonal attention **across** time. The marker on the left is the row of the patch you clicked. Colours are on "
    "a log scale around uniform attention (1/N): bright means far more than uniform.")


SEEN_EXAMPLES = [
    "a red circle moving left on a black background",
    "a yellow square moves up on a white background",
    "on a gray background, a blue circle slides right",
    "a black background with a red star getting bigger",
    "green square, shrinking, white background",
]
HELD_OUT_EXAMPLES = [
    "a green triangle moving right on a black background",
    "a purple circle moves down on a white background",
    "on a gray background, an orange square grows",
    "a blue star moving left on a black background",
]


# The Generate tab's controls: their labels and the line under each (Gradio's `info`).
CONTROLS = {
    "prompt": dict(label="Prompt",
                   info="A shape (circle, square, triangle, star), a colour, a motion and a background."),
    "guidance": dict(label="Class guidance (classifier-free guidance scale, w)",
                     info="How hard to follow the prompt. 0 and 1: no guidance."),
    "guider": dict(label="Guidance method",
                   info="How the push towards the prompt is applied; Guidance side by side (below) compares them."),
    "steps": dict(label="Iterations (sampling steps)",
                  info="Solver steps from noise to clip; a step is one pass through the transformer (Heun: two)."),
    "sampler": dict(label="Sampler (solver)", info="Higher-order solvers correct for the bends in the path: fewer "
                                                   "steps for the same clip. Compare them at equal passes."),
    "samples": dict(label="Number of samples (clips, the batch size)",
                    info="Many samples are slow on a CPU: time grows with the number of clips."),
    "seed": dict(label="Seed", info="Same seed, same starting noise, same clips."),
    "model": dict(label="Model",
                  info="The fast model is a student distilled from the full one: a clip in a few steps, one pass "
                       "each, its guidance built into its weights. Choosing one sets the iterations, class guidance "
                       "and sampler to its own; you may still change them."),
}
HELD_OUT_LABEL = "Held out: colour-shape pairs never seen in training (does it compose?)"
PREVIEW_LABEL = "Live preview: the model's current guess of the clean clips (pred_x0), updated every few iterations"

# The denoising-trajectory view, when a fast (distilled) model is loaded beside the full one.
FAST_TEXT = (
    "**Beside the fast model.** This server also has a fast model: a student distilled from the full one "
    "(`tiny_dit/training/distill.py`). *Compare with the fast model* samples your run's prompt and seed with "
    "both, from the same starting noise: the full model at its defaults, the student in the steps chosen here. "
    "Each column is a noise level the student visits; the full model's rows show its own pass at that level.")
FAST_WHY = (
    "Why a few steps are enough: the student was trained to land, in one big step, where the teacher's whole path "
    "of small steps ends (the teacher's path bends; the line from its noise to its clip does not), and the "
    "teacher's guidance is in its weights, so it reads the prompt alone, one transformer pass a step.")

INSIDE_TEXT = ("## Inside the model\nEverything below is computed from the run you just made (clip 1), except the "
               "guidance comparison, the forward process and how the model learned.")


# ----------------------------------------------------------------------------
# Summaries of one result, in Markdown
# ----------------------------------------------------------------------------


def guidance_state(w: float, method: str | None = None) -> str:
    """Whether guidance ran at weight w, in words (the rule is flow.is_guided), and by which method."""
    if not is_guided(w):
        return "off (w <= 1: the conditional model alone)"
    return "on" if method is None else f"on ({method})"


def model_summary(model_name: str, g, notices: list[str], fast_name: str = "", fast_steps: int | None = None) -> str:
    """The line under the title: the model's sizes (a ModelGeometry), the fast model beside it (if one is
    loaded: its name and default steps), and the loading notices."""
    line = (f"Model: `{model_name}`: {g.num_frames} frames of {g.width} x {g.height} px, "
            f"{g.num_tokens} tokens, {g.depth} blocks x {g.num_heads} heads, width {g.hidden_size}.")
    if fast_name:
        line += (f" Fast model: `{fast_name}`, a student distilled from it: {fast_steps} steps, guidance in its "
                 "weights (choose it under *Model*).")
    return "\n\n".join([line] + [f"**Note:** {n}" for n in notices])


def fast_guided_notice(w: float) -> str:
    """Why a fast-model run with class guidance on is unusual (the run goes ahead as asked)."""
    return (f"The fast model has its guidance built into its weights: class guidance w = {w:g} guides it a second "
            "time (two passes a step, and colours that overshoot). Set class guidance to 1 for its own.")


def run_summary(record, total: float, model: str | None = None) -> str:
    """What a Generate run did and where its time went (a RunRecord; `total`: seconds, all in; `model`: which
    model made it, "full" or "fast", named when the page offers both)."""
    t = record.timings
    n, steps = record.num_videos, record.num_inference_steps
    per_step = t["denoise"] / max(steps, 1)
    passes = f", {record.num_passes} transformer passes" if record.num_passes != steps else ""
    by = f" by the {model} model" if model else ""
    lines = [f"**{n} clip{'s' if n > 1 else ''} in {total:.1f} s**{by} ({steps} iterations{passes} of the "
             f"{record.scheduler} sampler, class guidance {record.guidance_scale:g} = "
             f"{guidance_state(record.guidance_scale, _literal(record.guider))}, seed {record.seed}).",
             f"Prompt and noise {t['prepare']:.2f} s, denoising {t['denoise']:.1f} s ({per_step:.2f} s per "
             f"iteration), decoding {t['decode']:.2f} s, CLIP scores {t['clip_score']:.2f} s, writing mp4 "
             f"{t.get('write_mp4', 0):.2f} s."]
    lines += [f"Note: {notice}" for notice in record.notices]
    return "\n\n".join(lines)


def iteration_status(event) -> str:
    """The status line of a Generate run after one iteration (a tiny_dit.inside.recorder.StepEvent)."""
    return (f"Iteration {event.step + 1} of {event.num_steps} (noise level sigma = {event.sigma:.2f}), "
            f"{event.elapsed:.1f} s. The preview shows the model's current guess of the clean clip.")


def attention_caption(record, layer: int, head: int | None, shown: int) -> str:
    """Which map the attention view shows: block, head, pass and its noise level."""
    who = "the mean of all heads" if head is None else f"head {head + 1}"
    return (f"Block {layer + 1} ({record.geometry.layouts[layer]} attention), {who}, iteration {shown + 1} of "
            f"{record.num_passes} (noise level sigma = {float(record.sigmas[shown]):.2f}), clip 1.")


def fast_comparison_summary(full, fast, difference: float) -> str:
    """The full model beside its fast student on the same prompt and noise (two RunRecords; `difference`: the
    mean absolute difference of their finished clips, in grey levels 0-255), and why the student needs so few
    steps (FAST_WHY)."""
    def how(record) -> str:
        passes = f", {record.num_passes} passes" if record.num_passes != record.num_inference_steps else ""
        return (f"{record.num_inference_steps} step{'s' if record.num_inference_steps > 1 else ''}{passes} of "
                f"the {record.scheduler} sampler, class guidance {record.guidance_scale:g} = "
                f"{guidance_state(record.guidance_scale, _literal(record.guider))}, denoising in "
                f"{record.timings['denoise']:.2f} s")

    return (f"Prompt \"{full.prompt}\", seed {full.seed}, the same starting noise (clip 1 of your run). "
            f"**Full model:** {how(full)}, CLIP score {full.clip_scores[0]:.3f}. **Fast model:** {how(fast)}, CLIP "
            f"score {fast.clip_scores[0]:.3f}. The two clips differ by {difference:.1f} grey levels per pixel on "
            f"average (of 255).\n\n{FAST_WHY}")


STRAY_PIXELS_NOTE = ("Stray pixels: the share of the frame's pixels far from the background outside the object's "
                     "body (tiny_dit.training.evaluate.stray_pixel_share), the dots, stripes and halos that too much "
                     "guidance paints; a clean clip has none.")


def guidance_table(prompt: str, seed: int, steps: int, sampler: str, seconds: float, compare: str,
                   methods: list[str], scales: list[float], scores: list[float], strays: list[float]) -> str:
    """The guidance comparison, one row per clip: its method (`compare` "methods") or its weight w and whether
    guidance ran ("scales"), its CLIP score and its stray pixels (`strays`: shares, 0 to 1)."""
    stray = [f"{100 * s:.2f}%" for s in strays]
    if compare == "methods":
        what = f"class guidance w = {scales[0]:g} by each method"
        header = "| method | what it changes | CLIP score | stray pixels |\n|---|---|---:|---:|"
        rows = [f"| {_literal(m)} | {_literal(GUIDERS[m][2])} | {c:.3f} | {p} |"
                for m, c, p in zip(methods, scores, stray)]
        if not is_guided(scales[0]):
            rows.append("\nAt w <= 1 no method guides: the conditional model alone, the same clip each time.")
    else:
        what = f"{_literal(methods[0])} guidance at each scale"
        header = "| class guidance w | guidance | CLIP score | stray pixels |\n|---:|---|---:|---:|"
        rows = [f"| {w:g} | {'on' if is_guided(w) else 'off: the conditional model alone'} | {c:.3f} | {p} |"
                for w, c, p in zip(scales, scores, stray)]
    return (f"Prompt \"{prompt}\", seed {seed}, {steps} iterations of the {sampler} sampler, {what}, "
            f"{seconds:.1f} s.\n\n{header}\n" + "\n".join(rows) + f"\n\n{STRAY_PIXELS_NOTE}")


def _literal(text: str) -> str:
    """A method's name or label shown as written: the star of CFG-Zero* starts no emphasis."""
    return text.replace("*", "\\*")


def text_path_summary(tokens, clip_scores: list[float], reference: float | None) -> str:
    """What CLIP read of the prompt (a TokenInfo), and the clips' CLIP scores beside a rendered clip's."""
    real = tokens.num_real
    summary = (f"CLIP read **{real} of its {tokens.context_length} token slots** (start + {real - 2} word pieces + "
               f"end); the other {tokens.context_length - real} are padding, masked out of cross-attention.")
    if tokens.truncated:
        summary += f" The prompt needed {tokens.num_wanted} tokens, so it was **truncated** to \"{tokens.read_text}\"."
    summary += f" Mean CLIP score of the {len(clip_scores)} clips: {float(np.mean(clip_scores)):.3f}"
    summary += f" (a rendered clip of the prompt: {reference:.3f})." if reference is not None else "."
    return summary


def adaln_summary(adaln: np.ndarray) -> str:
    """The gates of adaLN-Zero per block, from a record's (passes, depth, 6) modulation magnitudes."""
    gates = adaln[:, :, [2, 5]].mean(axis=(0, 2))  # mean |gate| per block
    strongest = int(gates.argmax())
    return ("Mean |gate| over the run, per block: " + ", ".join(f"block {b + 1}: {g:.3f}" for b, g in enumerate(gates))
            + f". Block {strongest + 1} lets the most of its branches through. Iteration 1 is the noisiest "
              f"(sigma = 1), the last the cleanest.")


def forward_process_summary(attributes: dict, named: bool, level: float, num_frames: int) -> str:
    """The forward-process view: which rendered clip, at which noise level, and how much of each."""
    from tiny_dit.data.shapes import HELD_OUT_PAIRS

    what = "{color} {shape} moving {motion} on a {background} background".format(**attributes).replace(
        "moving growing", "growing").replace("moving shrinking", "shrinking")
    article = "an" if what[0] in "aeiou" else "a"
    shown = min(8, num_frames)
    md = (f"A rendered clip of {article} {what} ({shown} of its {num_frames} frames), at noise level "
          f"**s = {level:.2f}**: {100 * (1 - level):.0f}% clip + {100 * level:.0f}% noise in latent space.")
    if not named:
        md += " (The prompt names no shapes-world colour and shape, so a red circle is shown.)"
    if (attributes["color"], attributes["shape"]) in HELD_OUT_PAIRS:
        md += " This colour-shape pair is **held out**: the model never saw it in training."
    return md


def sora_summary(result: str, num_frames: int, width: int, height: int, steps: int, sampler: str,
                 guidance: float, seed: int, seconds: float, notices: list[str]) -> str:
    """A Sora-task result: what was made (`result`, from sora_tasks.describe_result) and how."""
    lines = [f"**{result}**",
             f"{num_frames} frame{'s' if num_frames > 1 else ''} of {width} x {height} px, {steps} iterations of "
             f"the {sampler} sampler, class guidance {guidance:g}, seed {seed}, {seconds:.1f} s."]
    lines += [f"Note: {n}" for n in notices]
    return "\n\n".join(lines)
