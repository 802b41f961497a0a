"""Make a guider the default of a pipeline folder without rewriting its weights: guider/guider_config.json and
model_index.json's entry, as save_pretrained would write them.

    python benchmarks/set_bundle_guider.py --model assets/tiny-dit-shapes --guider interval --scale 3

How the bundle's default came from benchmarks/guidance.py's pick (docs/sampling.md, "Guidance without fringes").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in the checkout


def main(argv: list[str] | None = None) -> None:
    from tiny_dit.guiders import GUIDERS, make_guider

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("assets/tiny-dit-shapes"), help="pipeline folder")
    parser.add_argument("--guider", choices=list(GUIDERS), required=True, help="guidance method")
    parser.add_argument("--scale", type=float, required=True, help="guidance scale")
    args = parser.parse_args(argv)
    index_path = args.model / "model_index.json"
    if not index_path.is_file():
        parser.error(f"--model {args.model}: no model_index.json (not a pipeline folder)")
    guider = make_guider(args.guider, args.scale)
    guider.save_pretrained(args.model / "guider")
    index = json.loads(index_path.read_text())
    index["guider"] = ["diffusers", type(guider).__name__]
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    print(f"{args.model}: guider {args.guider} at {args.scale:g} ({type(guider).__name__})")


if __name__ == "__main__":
    main()
