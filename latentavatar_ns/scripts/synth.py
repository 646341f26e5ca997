"""``ns-latentavatar-synth``: write a synthetic head dataset (``latentavatar_ns.synthetic.make_dataset``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from latentavatar_ns.synthetic.writer import SYNTH_FILE, DatasetOptions, make_dataset
from latentavatar_ns.utils.errors import cli_command


@dataclass
class SynthConfig(DatasetOptions):
    """Render a procedural head dataset with exact ground-truth pose and expression.

    Render another identity with --drive-from pointing at a first dataset to get the ground truth of
    cross-identity reenactment: the second person making the first one's poses and expressions.
    """


# make_dataset checks its options with plain ValueErrors (it is also a library function): here they are the user's
# to fix. An occupied output folder is an OutputExistsError, a LatentAvatarError like every other.
@cli_command(ValueError)
def entrypoint() -> None:
    import tyro

    cfg = tyro.cli(SynthConfig)
    out = make_dataset(**asdict(cfg))
    info = json.loads((out / SYNTH_FILE).read_text())
    source = f", driven by {cfg.drive_from}" if cfg.drive_from is not None else ""
    source += ", detailed head" if cfg.detail else ""
    if cfg.num_views > 1:
        heldout = ", ".join(info["heldout_views"]) or "none"
        source += f", {cfg.num_views} views ({cfg.view_layout}; held out: {heldout})"
    print(f"Wrote {out}: identity {cfg.identity}, {info['num_train']} train + {info['num_eval']} eval frames "
          f"at {info['resolution'][0]}x{info['resolution'][1]}{source}")


if __name__ == "__main__":
    entrypoint()
