"""The Gradio app's parts (app.py at the repository root is its layout and wiring).

    checks.py          every input checked on the server, raw, with a message that names the field
    sessions.py        what the app keeps per session (bounded), and Stop
    queue_limits.py    the queue of a whole class: its size, one run at a time per session, the messages
    startup.py         loading the model at start, with a fallback and the compute dtype
    layout.py          each tab's controls
    view_contents.py   what each view shows, from a recorded run (pictures from tiny_dit.inside)
    outputs.py         the mp4 files a run writes
    sora_tasks.py      Sora's other tasks: uploads to conditions, known frames marked;
                       python -m tiny_dit.app.sora_tasks rewrites assets/examples/

Layer: on top. May import anything in tiny_dit; nothing below imports the app.
"""
