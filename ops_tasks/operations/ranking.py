"""Several models compared at once: Holm's correction over a family of paired comparisons, a ranking
that says which places are certain, and equivalence within a margin (TOST). Pure functions over the
comparison dicts report.paired produces (no files, no printing); stdlib and stats only.

Miller ("Adding Error Bars to Evals", 2024) compares two models on the examples both answered; with
several models each pair is such a comparison, on the examples THAT pair shares (n per pair), and
m comparisons at 5% each would declare some pair different far more often than 5% when none is:
Holm's step-down correction holds the chance of any false "better" in the family at 5%.
"""

import math
from typing import Optional

from . import stats

ALPHA = stats.ALPHA

# pair["decided"]: what the family lets one say of the pair
A_BETTER, B_BETTER = "a better", "b better"
EQUAL = "equal within +/-margin"
NO_DIFFERENCE = "no detectable difference"
NOT_TESTED = "not tested"
# pair["equivalence"], when a margin is given
SHOWN_EQUAL, NOT_SHOWN_EQUAL, NO_TOST = "equal within +/-margin", "not shown equal within +/-margin", "no equivalence test"


def several(comparisons: list, baseline: Optional[str] = None, margin: Optional[float] = None) -> dict:
    """The pairwise comparisons of several models read as one family.

    comparisons: report.paired dicts (run_a, run_b, metric, lower_is_better, n, mean_a, mean_b,
    mean_diff = B - A, se_diff, ci95_low/high, test, p_value, clusters), all pairs of the models or,
    with `baseline`, each model against the baseline (then every comparison must involve it).

    Difference: Holm's correction (stats.holm) over the p-values that exist (a comparison with no
    p-value, e.g. no spread in its differences or under 2 shared examples, is "not tested", left out of
    the family and named in the notes); a pair is decided "a better"/"b better" when its Holm p < 5%.
    Whatever the dependence between pairs (they share models and examples), the chance that ANY pair
    is declared different when none is stays at or below 5%.

    Equivalence (margin > 0): TOST (stats.tost_paired) on each tested pair with a standard error above
    0, df = clusters - 1 for a clustered comparison, else n - 1. The TOST p-values are Holm-adjusted as
    a family of their own (tost_p_holm; tost_p is the pair's own): a list of "equal" claims is read
    like a list of "better" claims, so its chance of holding any false one is held at 5% too. The two
    families' nulls never hold together for one pair (a true difference of 0 is inside the margin), so
    each kind of claim errs at most 5% of the time, and a false claim of either kind at most 10%. For
    0/1 scores (decided by McNemar's exact test) the TOST is the same paired t on the 0/1 differences
    (se_diff is sd / sqrt(n) there too): there is no exact TOST, and at the sample sizes that can show
    equivalence the t is close to its normal limit. No TOST where the differences have no spread
    (se 0): two runs that agree on a handful of examples do not show two models equal.

    Returns {"family", "metric", "lower_is_better", "alpha", "margin", "models", "pairs", "ranking",
    "notes"}; each pair {"a", "b", "n", "clusters", "mean_a", "mean_b", "mean_diff", "ci95_low",
    "ci95_high", "test", "p_value", "p_holm", "decided", "better", "tost_p", "tost_df", "tost_p_holm",
    "equivalence"}; the ranking as ranking() gives it.
    """
    if not comparisons:
        raise ValueError("several needs at least one comparison")
    if margin is not None and not margin > 0:
        raise ValueError("an equivalence margin is a positive number")
    metric, loss = comparisons[0]["metric"], bool(comparisons[0]["lower_is_better"])
    seen = set()
    for c in comparisons:
        if c["metric"] != metric or bool(c["lower_is_better"]) != loss:
            raise ValueError(f"several compares one metric: {metric} and {c['metric']} mixed")
        key = frozenset((c["run_a"], c["run_b"]))
        if len(key) < 2 or key in seen:
            raise ValueError(f"{c['run_a']} vs {c['run_b']}: a model against itself, or a pair given twice")
        if baseline is not None and baseline not in key:
            raise ValueError(f"{c['run_a']} vs {c['run_b']} is not a comparison against the baseline {baseline}")
        seen.add(key)
    pairs = [_pair(c, margin) for c in comparisons]
    _adjust(pairs, "p_value", "p_holm")
    _adjust(pairs, "tost_p", "tost_p_holm")
    for pair, c in zip(pairs, comparisons):
        _decide(pair, c, loss, margin)
    models = list(dict.fromkeys(name for c in comparisons for name in (c["run_a"], c["run_b"])))
    result = {"family": "all pairs" if baseline is None else f"each against {baseline}", "metric": metric,
              "lower_is_better": loss, "alpha": ALPHA, "margin": margin, "models": models, "pairs": pairs}
    result["ranking"], ranking_notes = ranking(models, pairs, comparisons, loss)
    result["notes"] = _notes(result, baseline) + ranking_notes
    return result


def _pair(c: dict, margin: Optional[float]) -> dict:
    pair = {"a": c["run_a"], "b": c["run_b"], "n": c["n"], "clusters": c.get("clusters"),
            "mean_a": c["mean_a"], "mean_b": c["mean_b"], "mean_diff": c["mean_diff"],
            "ci95_low": c["ci95_low"], "ci95_high": c["ci95_high"], "test": c["test"], "p_value": c["p_value"],
            "p_holm": None, "decided": None, "better": None, "tost_p": None, "tost_p_holm": None,
            "equivalence": None, "tost_df": None}
    if margin is not None:
        pair["tost_p"], pair["tost_df"] = tost(c, margin)
        pair["equivalence"] = NO_TOST if pair["tost_p"] is None else None
    return pair


def tost(c: dict, margin: float) -> tuple:
    """(TOST p, df) of one comparison within +/- margin, or (None, None) where there is nothing to
    test: no difference test (no p-value), no spread (se 0), or under 2 clusters / examples."""
    se, clusters = c.get("se_diff"), c.get("clusters")
    df = clusters - 1 if clusters else c["n"] - 1
    if c["p_value"] is None or se is None or not se > 0 or df < 1 or c["mean_diff"] is None:
        return None, None
    return stats.tost_paired(c["mean_diff"], se, df, margin), df


def _adjust(pairs: list, key: str, adjusted: str) -> None:
    tested = [pair for pair in pairs if pair[key] is not None]
    for pair, value in zip(tested, stats.holm(pair[key] for pair in tested)):
        pair[adjusted] = value


def _decide(pair: dict, c: dict, loss: bool, margin: Optional[float]) -> None:
    if margin is not None and pair["tost_p_holm"] is not None:
        pair["equivalence"] = SHOWN_EQUAL if pair["tost_p_holm"] < ALPHA else NOT_SHOWN_EQUAL
    if pair["p_holm"] is None:
        pair["decided"] = NOT_TESTED
        return
    gain = (-1 if loss else 1) * c["mean_diff"]  # > 0: B better
    if pair["p_holm"] < ALPHA and gain != 0:
        pair["decided"], pair["better"] = (B_BETTER, pair["b"]) if gain > 0 else (A_BETTER, pair["a"])
    else:
        pair["decided"] = EQUAL if pair["equivalence"] == SHOWN_EQUAL else NO_DIFFERENCE


def _notes(result: dict, baseline: Optional[str]) -> list:
    pairs = result["pairs"]
    tested = [p for p in pairs if p["p_holm"] is not None]
    counts = sorted({p["n"] for p in pairs})
    shared = str(counts[0]) if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"
    notes = [f"each pair is compared on the examples both of its models share ({shared} shared examples a pair), "
             "paired as in a two-way comparison",
             f"Holm's correction over the {len(tested)} p-values of the family ({result['family']}) holds the "
             "chance that any pair is declared different when none is at 5% (family-wise)"]
    untested = [f"{p['a']} vs {p['b']} ({p['test'] or 'no test'}, {p['n']} shared examples)" for p in pairs
                if p["p_holm"] is None]
    if untested:
        notes.append(f"not tested, no p-value, left out of the family: {'; '.join(untested)}")
    if result["margin"] is not None:
        notes.append(f"equivalence within +/-{result['margin']:g}: two one-sided paired t tests (TOST; the same t for "
                     "0/1 scores), Holm-adjusted as a family of their own: the chance of any false 'equal' is at "
                     "most 5% too")
    if baseline is None:
        models = result["models"]
        compared = {frozenset((p["a"], p["b"])) for p in pairs}
        missing = [f"{x} vs {y}" for i, x in enumerate(models) for y in models[i + 1:] if frozenset((x, y)) not in compared]
        if missing:
            notes.append(f"pairs not compared (not in the family): {'; '.join(missing)}")
    return notes


# ---------------------------------------------------------------- the ranking


def ranking(models: list, pairs: list, comparisons: list, loss: bool) -> tuple:
    """(places, notes): the models ordered by mean (best first: highest, or lowest when lower is
    better) and the places the family's decisions allow each.

    A model's place lies between 1 + (models decided better than it) and N - (models decided worse).
    "Decided" is a Holm-significant pair, or a chain of them (A better than B better than C says A
    better than C): when every decision of the family is right, which Holm gives with 95% probability,
    every model's true place is inside its range, all at once. A place is certain when the range is
    one place: the model is decided better than every model below it and worse than every one above.
    Consecutive models with the same range share one entry:
    {"place": "2-3", "low": 2, "high": 3, "models": [...], "means": [...], "certain": False, "why": "..."}.

    A model's mean is the one on its comparison with the most shared examples; where its pairs share
    different example sets its means differ and a note says so (the places come from paired tests
    only, the order within a shared place from those means).
    """
    means, notes = {}, []
    for c in sorted(comparisons, key=lambda c: -c["n"]):
        for name, mean in ((c["run_a"], c["mean_a"]), (c["run_b"], c["mean_b"])):
            means.setdefault(name, []).append(mean)
    differing = [name for name, values in means.items()
                 if any(v is not None and values[0] is not None and abs(v - values[0]) > 1e-12 * max(1.0, abs(v))
                        for v in values)]
    if differing:
        notes.append(f"the pairs share different example sets: the means of {', '.join(differing)} differ between "
                     "their comparisons; the order uses each model's mean on its largest shared set, the places "
                     "only paired tests")
    sign = 1 if loss else -1
    order = sorted(models, key=lambda name: (means[name][0] is None, sign * (means[name][0] or 0.0)))
    better = _decided_better(pairs)
    closure = _closure(better, models)
    in_cycle = {name for name in models if name in closure[name]}
    if in_cycle:
        notes.append("the decisions contradict one another (a cycle of 'better'): places from direct decisions only")
        closure = better
    above = {name: {other for other in models if name in closure[other]} for name in models}
    ranges = {name: (1 + len(above[name]), len(models) - len(closure[name])) for name in models}
    places = []
    for name in order:
        if places and (places[-1]["low"], places[-1]["high"]) == ranges[name]:
            places[-1]["models"].append(name)
            places[-1]["means"].append(means[name][0])
            continue
        low, high = ranges[name]
        places.append({"place": str(low) if low == high else f"{low}-{high}", "low": low, "high": high,
                       "models": [name], "means": [means[name][0]], "certain": low == high})
    by_key = {frozenset((p["a"], p["b"])): p for p in pairs}
    for place in places:
        # One place held by several models, or by a model in a cycle of decisions, is no certain place.
        place["certain"] = place["certain"] and len(place["models"]) == 1 and not in_cycle & set(place["models"])
        place["why"] = _why(place, models, better, closure, by_key)
    return places, notes


def _decided_better(pairs: list) -> dict:
    """{model: the models it is decided better than, directly}."""
    better = {}
    for pair in pairs:
        for name in (pair["a"], pair["b"]):
            better.setdefault(name, set())
        if pair["better"] is not None:
            better[pair["better"]].add(pair["b"] if pair["better"] == pair["a"] else pair["a"])
    return better


def _closure(better: dict, models: list) -> dict:
    """{model: every model it is better than, directly or through a chain}."""
    closure = {}
    for name in models:
        found, todo = set(), list(better.get(name, ()))
        while todo:
            other = todo.pop()
            if other not in found:
                found.add(other)
                todo.extend(better.get(other, ()))
        closure[name] = found
    return closure


def _why(place: dict, models: list, better: dict, closure: dict, by_key: dict) -> str:
    names = place["models"]
    if place["certain"]:
        name = names[0]
        direct = [by_key[frozenset((name, o))]["p_holm"] for o in models if o != name
                  and (o in better[name] or name in better[o])]
        chained = [o for o in models if o != name and o not in better[name] and name not in better[o]]
        text = f"separated from each of the other {len(models) - 1} models" + (
            f", largest Holm p = {max(direct):.2g}" if direct else "")
        return text + (f"; from {', '.join(chained)} through a chain of decided pairs" if chained else "")
    open_pairs = []
    for name in names:
        for other in models:
            if other == name or other in closure[name] or name in closure[other]:
                continue
            if other in names and models.index(other) < models.index(name):
                continue  # within the entry: named once
            open_pairs.append(_open_text(name, other, by_key.get(frozenset((name, other)))))
    if not open_pairs:  # every pair decided, yet one place: the decisions go round in a cycle
        return "the decisions about them contradict one another (a cycle of 'better'): no place is certain"
    return "not separated: " + "; ".join(open_pairs)


def _open_text(name: str, other: str, pair: Optional[dict]) -> str:
    if pair is None:
        return f"{name} vs {other} not compared"
    if pair["decided"] == NOT_TESTED:
        return f"{name} vs {other} not tested ({pair['test'] or 'no p-value'})"
    text = f"{name} vs {other} (Holm p = {pair['p_holm']:.2g})"
    return text + (" equal within the margin" if pair["decided"] == EQUAL else "")


# ---------------------------------------------------------------- text


def _decimals(half_width: float) -> int:
    """Decimal places that show an interval's half-width to 2 significant digits (and its bounds and
    centre to the same places): the digits the interval can vouch for."""
    if not half_width > 0 or not math.isfinite(half_width):
        return 3
    return max(0, 1 - math.floor(math.log10(half_width)))


def effect_text(mean_diff: float, low: Optional[float], high: Optional[float]) -> str:
    """'0.052 [0.013, 0.092]': the effect and its 95% interval to the interval's precision; the effect
    alone to 2 significant digits where there is no interval."""
    if low is None or high is None:
        return f"{mean_diff:.2g}"
    places = _decimals((high - low) / 2)
    return f"{_fixed(mean_diff, places)} {_interval(low, high)}"


def _shared(pair: dict) -> str:
    clusters = f", {pair['clusters']} clusters" if pair.get("clusters") else ""
    return f"({pair['n']} shared examples{clusters})"


def pair_line(pair: dict, lower_is_better: bool, margin: Optional[float] = None) -> str:
    """One pair of a family in words, e.g. 'M1 better than M2 by 0.05 [0.01, 0.09], p = 0.003,
    Holm p = 0.009 (200 shared examples)'."""
    a, b = pair["a"], pair["b"]
    if pair["decided"] == NOT_TESTED:
        return f"{a} vs {b}: not tested, left out of the family ({pair['test'] or 'no p-value'}) {_shared(pair)}"
    p = f"p = {pair['p_value']:.2g}, Holm p = {pair['p_holm']:.2g}"
    if pair["better"] is not None:
        winner, loser = (a, b) if pair["better"] == a else (b, a)
        # the winner's gain: winner - loser (loser - winner when lower is better) = towards * (B - A)
        towards = (1 if winner == b else -1) * (-1 if lower_is_better else 1)
        bounds = (None, None) if pair["ci95_low"] is None else \
            sorted(towards * v for v in (pair["ci95_low"], pair["ci95_high"]))
        text = f"{winner} better than {loser} by {effect_text(towards * pair['mean_diff'], *bounds)}, {p}"
    else:
        what = f"equal within +/-{margin:g}" if pair["decided"] == EQUAL else "no detectable difference"
        text = (f"{a} vs {b}: {what}, {b} - {a} = "
                f"{effect_text(pair['mean_diff'], pair['ci95_low'], pair['ci95_high'])}, {p}")
    if margin is not None:
        text += "; " + _tost_words(pair, margin)
    direction = " (lower is better)" if lower_is_better and pair["better"] is not None else ""
    return f"{text}{direction} {_shared(pair)}"


def _tost_words(pair: dict, margin: float) -> str:
    if pair["tost_p"] is None:
        return "no equivalence test (no spread in the differences, or no test)"
    shown = "equal" if pair["equivalence"] == SHOWN_EQUAL else "not shown equal"
    return f"{shown} within +/-{margin:g} (TOST p = {pair['tost_p']:.2g}, Holm {pair['tost_p_holm']:.2g})"


def place_line(place: dict) -> str:
    """'place 1: M1 (certain: ...)' or 'places 2-3: M2, M3 (not certain: ...)'."""
    label = "place" if place["low"] == place["high"] else "places"
    names = ", ".join(f"{name} {mean:.4g}" if mean is not None else name
                      for name, mean in zip(place["models"], place["means"]))
    return f"{label} {place['place']}: {names} ({'certain' if place['certain'] else 'not certain'}: {place['why']})"


def several_lines(result: dict) -> list:
    """The family as plain-text lines (the report escapes and renders them): a header, a line a pair,
    the ranking a line a place, then the notes."""
    direction = ", lower is better" if result["lower_is_better"] else ""
    lines = [f"{len(result['models'])} models compared on {result['metric']}{direction}: {len(result['pairs'])} "
             f"pairs ({result['family']}), Holm-corrected at 5% family-wise"]
    lines += [pair_line(pair, result["lower_is_better"], result["margin"]) for pair in result["pairs"]]
    lines.append("ranking (best first; a place is certain when the model is decided better than every model "
                 "below it and worse than every one above):")
    lines += [place_line(place) for place in result["ranking"]]
    lines += [f"note: {note}" for note in result["notes"]]
    return lines


def equivalence_text(c: dict, margin: float) -> str:
    """A single two-way comparison's equivalence within +/- margin (per pair, no family): TOST at 5%,
    which shows equality exactly when the 90% interval mean +/- t(0.95, df) se lies inside the margin.
    "equal within +/-0.02 (TOST p = 0.01): the 90% interval [..] lies inside it" or "not shown equal
    within +/-0.02 (TOST p = 0.3): the 95% interval [..] reaches beyond the margin" (the 90% interval
    where the shown 95% one, clipped to the metric's range, does not)."""
    p, df = tost(c, margin)
    if p is None:
        spread = c["sd_diff"] == 0 or (c["p_value"] is not None and c.get("se_diff") == 0)
        return f"no equivalence test within +/-{margin:g}: " + (
            "no spread in the differences (no standard error)" if spread else
            f"no difference test ({c['n']} shared example{'s' if c['n'] != 1 else ''})")
    half = stats.t_quantile(0.95, df) * c["se_diff"]
    low90, high90 = c["mean_diff"] - half, c["mean_diff"] + half
    if p < ALPHA:
        return (f"equal within +/-{margin:g} (TOST p = {p:.2g}): the 90% interval "
                f"{_interval(low90, high90)} lies inside it")
    low, high = c["ci95_low"], c["ci95_high"]
    if low is not None and (low <= -margin or high >= margin):
        return (f"not shown equal within +/-{margin:g} (TOST p = {p:.2g}): the 95% interval "
                f"{_interval(low, high)} reaches beyond the margin")
    return (f"not shown equal within +/-{margin:g} (TOST p = {p:.2g}): the 90% interval "
            f"{_interval(low90, high90)} that TOST needs inside the margin reaches beyond it")


def _interval(low: float, high: float) -> str:
    places = _decimals((high - low) / 2)
    return f"[{_fixed(low, places)}, {_fixed(high, places)}]"


def _fixed(value: float, places: int) -> str:
    """value to `places` decimals; a value that would round to 0 (a bound that leaves 0 out shown as
    0.00, or -0.00) to 2 significant digits instead."""
    text = f"{value:.{places}f}"
    return f"{value:.2g}" if value != 0 and float(text) == 0 else text
