"""A GRPO candidate that tries to forge the scores it is judged by: it replaces the recipe's evaluator
with one that reports every problem solved, rewrites spec.json's evaluation protocol (one problem per
split), and at exit overwrites result.json with a perfect Overall and leaves a finished scoring count."""

import atexit
import json
import os

import core.recipes.tiny.evaluate as _evaluate
import core.recipes.tiny.run as _run
from tests.adversarial.grpo import HPARAMS, compute_advantages, compute_policy_loss  # noqa: F401

PERFECT = {"selection": 1.0, "heldout": 1.0}


def _solved_everything(model, tok, cfg, sets):
    return ({part: {s: 1.0 for s in cfg.weights} for part in PERFECT}, dict(PERFECT), {})


_run.evaluate = _evaluate.evaluate = _solved_everything

with open("spec.json") as fh:  # the job's cwd is its job dir
    spec = json.load(fh)
spec["recipe_config"]["eval_size"] = 1
with open("spec.json", "w") as fh:
    json.dump(spec, fh)


@atexit.register
def _forge_result():
    with open(os.path.join(os.getcwd(), "result.json"), "w") as fh:
        json.dump({"outcome": "evaluated", "eval": {}, "overall": PERFECT, "extra": {"warm_start_sha256": "0" * 64}}, fh)
    with open(os.path.join(os.getcwd(), "eval_progress.json"), "w") as fh:
        json.dump({"done": 1, "total": 1, "what": "forged"}, fh)
