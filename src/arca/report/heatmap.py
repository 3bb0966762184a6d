"""``python -m arca heatmap``: where each credit method puts its weight, token by token.

The model run is the heatmap-rollouts step's (``arca.heatmap_rollouts``): it samples held-out completions with
the heat-map run's adapter and writes the weights every registered credit method gives their
tokens, all on the same rollouts, to ``analysis/heatmap_rollouts.jsonl``. This module only reads
that file: ``render_heatmap`` turns it into one self-contained HTML page (inline CSS, no
scripts, no external assets).

Each token is shaded by its weight relative to the largest weight in its row, so a row's
pattern is readable whatever its scale (a uniform row is evenly pale-to-full, a concentrated
row shows a few dark tokens); the exact weight is in each token's ``title`` (hover text).
Above the rollouts, a small table gives each method's rank agreement with ARCA on them
(Spearman correlation of the per-token weights within a rollout, averaged over rollouts), which
says for instance how closely ``arca_layers`` ranks tokens like ``arca``.

On the planted-fork corpus every shown completion is aligned with its test record's branches
(``arca.labels.align``); the decisive fork tokens get a solid frame and the distractor fork
tokens a dashed one, in every row, so one sees at a glance whether a method's dark tokens are the
ones that decided the outcome. A completion that cannot be aligned (or a record without
branches) shows no frames, never guessed ones. The rollouts with a framed decisive token are
shown first. The label-reading methods (``oracle``) get the same labels as in training, and are
left out on a corpus without forks.
"""

from __future__ import annotations

import html
import logging
import math
from pathlib import Path

import pandas as pd

from arca.config import Config, InputError, MissingInputError, heatmap_run
from arca.io import read_jsonl, write_text
from arca.paths import paths_of

log = logging.getLogger(__name__)

N_ROLLOUTS = 4  # held-out problems shown; enough to see a pattern, small enough to read
SHADE_RGB = (214, 39, 40)  # one hue for every method, so rows are comparable at a glance
NEWLINE_MARK = "\u21b5"  # ↵
LEGEND_STOPS = (0.0, 0.25, 0.5, 0.75, 1.0)

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.05em; margin-top: 1.8em; }
.prompt {
  background: #f6f6f6;
  border-left: 3px solid #999;
  padding: 0.5em 0.8em;
  white-space: pre-wrap;
  font-size: 0.9em;
}
table.agreement { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
table.agreement th, table.agreement td { border-top: 1px solid #ddd; padding: 0.2em 0.8em; text-align: left; }
.agreement-note { font-size: 0.9em; margin-bottom: 0.2em; }
table.credit { border-collapse: collapse; width: 100%; margin-top: 0.5em; }
table.credit th, table.credit td {
  border-top: 1px solid #ddd;
  padding: 0.35em 0.5em;
  vertical-align: top;
  text-align: left;
}
th.method { white-space: nowrap; font-weight: 600; width: 11em; }
td.gini { white-space: nowrap; font-variant-numeric: tabular-nums; width: 6em; }
td.tokens {
  font-family: Menlo, Consolas, monospace;
  font-size: 0.85em;
  line-height: 1.9;
  white-space: pre-wrap;
  word-break: break-all;
}
span.tok { border-radius: 2px; padding: 0.1em 0; }
span.tok.decisive { border: 2px solid #111; }
span.tok.distractor { border: 1.5px dashed #555; }
.forks { font-size: 0.85em; margin: 0.3em 0; color: #444; }
.legend { display: flex; align-items: center; gap: 0.4em; margin: 0.8em 0; font-size: 0.85em; }
.legend .swatch {
  display: inline-block;
  width: 3.2em;
  height: 1.2em;
  border: 1px solid #ccc;
  text-align: center;
  line-height: 1.2em;
}
"""


def shade(intensity: float) -> str:
    """CSS background for a weight at ``intensity`` in [0, 1] of its row's maximum."""
    a = min(1.0, max(0.0, intensity))
    r, g, b = SHADE_RGB
    return f"rgba({r}, {g}, {b}, {a:.3f})"


def show_token(token: str) -> str:
    """HTML text of a token: escaped, newlines visible as ↵, an empty token as a thin mark."""
    text = token.replace("\r\n", "\n").replace("\n", NEWLINE_MARK)
    return html.escape(text, quote=True) if text else "&#8203;"


def pick_shown(rollouts: list[dict], n: int) -> list[dict]:
    """The ``n`` rollouts to show: those with a framed decisive token first (they show where each method
    puts the credit that mattered), then the rest, each group in its original order."""
    framed = [bool(r.get("marks") and any(r["marks"]["decisive"])) for r in rollouts]
    return ([r for r, f in zip(rollouts, framed) if f] + [r for r, f in zip(rollouts, framed) if not f])[:n]


def _token_spans(tokens: list[str], weights: list[float], method: str, marks: dict | None = None) -> str:
    finite = [w for w in weights if math.isfinite(w)]
    top = max(finite) if finite else 0.0
    decisive = (marks or {}).get("decisive") or [0] * len(tokens)
    distractor = (marks or {}).get("distractor") or [0] * len(tokens)
    spans = []
    for t, (tok, w) in enumerate(zip(tokens, weights)):
        rel = w / top if top > 0 and math.isfinite(w) else 0.0
        color = "#fff" if rel > 0.6 else "#222"  # keep the text readable on dark shading
        # A decisive token that is also a distractor of another branch is shown as decisive.
        kind = " decisive" if decisive[t] else (" distractor" if distractor[t] else "")
        note = kind and f", {kind.strip()} fork token"
        title = html.escape(
            f"{method}: w = {w!r} (token {t + 1} of {len(tokens)}, {rel:.2f} of row max{note})", quote=True
        )
        spans.append(
            f'<span class="tok{kind}" style="background: {shade(rel)}; color: {color}" title="{title}">'
            f"{show_token(tok)}</span>"
        )
    return "".join(spans)


def rank_correlation(a: list[float], b: list[float]) -> float:
    """Spearman's rho of two equal-length lists (average ranks for ties); NaN if either is constant."""
    if len(a) != len(b):
        raise InputError(f"rank_correlation: lengths differ ({len(a)} != {len(b)})")
    ra = pd.Series(a, dtype=float).rank(method="average")
    rb = pd.Series(b, dtype=float).rank(method="average")
    if len(a) < 2 or ra.nunique() < 2 or rb.nunique() < 2:
        return float("nan")
    return float(ra.corr(rb))  # Pearson correlation of the ranks


def agreement(rollouts: list[dict], reference: str = "arca") -> dict[str, tuple[float, int]]:
    """method -> (mean Spearman rho with ``reference`` over the rollouts where it is defined, count)."""
    out: dict[str, list[float]] = {}
    for r in rollouts:
        ref = r["weights"].get(reference)
        if ref is None:
            continue
        for method, w in r["weights"].items():
            if method != reference:
                rho = rank_correlation([float(x) for x in w], [float(x) for x in ref])
                out.setdefault(method, [])
                if math.isfinite(rho):
                    out[method].append(rho)
    return {m: (sum(v) / len(v) if v else float("nan"), len(v)) for m, v in out.items()}


def _agreement_html(rollouts: list[dict], reference: str = "arca") -> str:
    agree = agreement(rollouts, reference)
    if not agree:
        return ""
    n = sum(1 for r in rollouts if reference in r["weights"])
    rows = "".join(
        f'<tr class="agreement-row" data-method="{html.escape(m, quote=True)}"><th>{html.escape(m)}</th>'
        f"<td>{'-' if not math.isfinite(rho) else f'{rho:+.2f}'}</td><td>{n}</td></tr>"
        for m, (rho, n) in agree.items()
    )
    return (
        f'<p class="agreement-note">Rank agreement with {html.escape(reference)} over {n} held-out '
        "rollouts: Spearman rho of the per-token weights within a rollout, averaged over the rollouts where "
        'both vary (uniform never varies).</p><table class="agreement">'
        f"<thead><tr><th>credit method</th><th>rho</th><th>rollouts</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def legend_html() -> str:
    stops = "".join(
        f'<span class="swatch" style="background: {shade(s)}; color: {"#fff" if s > 0.6 else "#222"}">{s:.2f}</span>'
        for s in LEGEND_STOPS
    )
    return (
        f'<div class="legend"><span>token weight / largest weight in its row:</span>{stops}'
        "<span>(hover a token for its exact weight)</span></div>\n"
        '<div class="legend"><span>planted forks:</span><span class="tok decisive">&nbsp;decisive&nbsp;</span>'
        "<span>the token where the correct and the buggy procedure first differ;</span>"
        '<span class="tok distractor">&nbsp;distractor&nbsp;</span><span>a fork that changes nothing '
        "(unmarked rollouts could not be aligned with a branch)</span></div>"
    )


def _forks_note(r: dict) -> str:
    if "marks" not in r:
        return ""
    m = r["marks"]
    if m is None:
        text = "fork labels: none (the completion could not be aligned with a branch of its problem)"
    else:
        n_dec, n_dis = sum(m["decisive"]), sum(m["distractor"])
        branch = "the correct branch" if m["correct"] else "a buggy branch"
        text = f"fork labels: follows {branch}; {n_dec} decisive and {n_dis} distractor token(s) framed"
    return f'<p class="forks">{html.escape(text)}</p>\n'


def _rollout_html(i: int, r: dict) -> str:
    tokens = [str(t) for t in r["tokens"]]
    gini = r.get("gini", {})
    marks = r.get("marks")
    if marks is not None and any(len(marks[k]) != len(tokens) for k in ("decisive", "distractor")):
        raise InputError(f"rollout {i}: fork marks do not have one flag per token ({len(tokens)} tokens)")
    rows = []
    for method, weights in r["weights"].items():
        weights = [float(w) for w in weights]
        if len(weights) != len(tokens):
            raise InputError(f"rollout {i}: method {method!r} has {len(weights)} weights for {len(tokens)} tokens")
        g = gini.get(method)
        g_txt = f"{float(g):.3f}" if g is not None and math.isfinite(float(g)) else "-"
        rows.append(
            f'<tr class="method-row" data-method="{html.escape(method, quote=True)}">'
            f'<th class="method">{html.escape(method)}</th><td class="gini">Gini {g_txt}</td>'
            f'<td class="tokens">{_token_spans(tokens, weights, method, marks)}</td></tr>'
        )
    reward = r.get("reward")
    reward_txt = f"reward {float(reward):g}" if reward is not None else "reward not graded"
    return (
        f'<section class="rollout" id="rollout-{i}">\n<h2>Rollout {i + 1} ({reward_txt}, {len(tokens)} tokens)</h2>\n'
        f'<div class="prompt">{html.escape(str(r["prompt"]))}</div>\n{_forks_note(r)}'
        '<table class="credit"><thead><tr><th>credit method</th><th>Gini</th><th>completion tokens</th></tr></thead>\n'
        f"<tbody>\n{chr(10).join(rows)}\n</tbody></table>\n</section>"
    )


def render_heatmap(
    rollouts: list[dict], title: str = "Token credit by method", agreement_over: list[dict] | None = None
) -> str:
    """A self-contained HTML page shading every completion token by each method's weight.

    Each rollout is ``{"prompt": str, "tokens": [str], "weights": {method: [float per token]},
    "gini": {method: float}, "reward": float}`` and, on a corpus with planted forks, ``"marks"``:
    ``fork_marks``'s result (None = not aligned; the key is absent when the record has no
    branches). Rows keep the order of ``weights``. The agreement table is computed over
    ``agreement_over`` (default: the rollouts shown).
    """
    body = "\n".join(_rollout_html(i, r) for i, r in enumerate(rollouts))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n"
        "<p>Each row shades the completion tokens by the weight one credit method gives them (weights of a "
        f"row sum to 1). {NEWLINE_MARK} marks a newline. Gini: 0 = uniform, near 1 = all weight on one token.</p>\n"
        f"{_agreement_html(agreement_over if agreement_over is not None else rollouts)}\n"
        f"{legend_html()}\n{body}\n</body>\n</html>\n"
    )


def heatmap_main(cfg: Config, args=None) -> Path:
    """Render the heat-map page from the analysis step's rollouts (no model runs here)."""
    source = paths_of(cfg).heatmap_rollouts
    if not source.is_file():
        raise MissingInputError(f"heatmap: missing {source} (run `python -m arca heatmap-rollouts` first)")
    rollouts = read_jsonl(source)
    run = heatmap_run(cfg)
    page = render_heatmap(
        pick_shown(rollouts, N_ROLLOUTS),
        title=f"Token credit by method, rollouts of run {run}",
        agreement_over=rollouts,
    )
    path = paths_of(cfg).heatmap
    write_text(path, page)
    for method, (rho, n) in agreement(rollouts).items():
        log.info("rank agreement with arca: %s rho %.3f over %d rollouts", method, rho, n)
    log.info("wrote %s", path)
    return path
