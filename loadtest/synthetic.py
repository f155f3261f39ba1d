"""A mixed-type table built to break float32: the data of the fidelity test and the fidelity bench.

Missing numbers and strings (imputed), categories (one literally "None"), and a column of adjacent
float32 pairs that decides a lot: a split between them sits one ulp from both, so a double threshold
rounded to float32 sends one side the wrong way.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def mixed_table(task: str, rows: int = 600, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """Numbers with gaps, categories with gaps, and a column of adjacent float32 pairs that decides a lot."""
    rng = np.random.default_rng(seed)
    base = np.float32(rng.integers(1, 4, rows)) * np.float32(1.1)
    upper = rng.random(rows) < 0.5
    edge = np.where(upper, np.nextafter(base, np.float32(10)), base).astype(np.float64)
    age = rng.integers(18, 80, rows).astype(float)
    income = np.round(rng.lognormal(10, 1, rows), 2)
    score = np.round(rng.normal(0, 1, rows), 3)
    rating = rng.integers(1, 6, rows).astype(float)
    city = rng.choice(["north", "south", "east", "west", "None"], rows).astype(object)
    plan = rng.choice(["basic", "pro", "team"], rows, p=[0.6, 0.3, 0.1])
    for column, rate in ((age, 0.08), (income, 0.1), (score, 0.05)):
        column[rng.random(rows) < rate] = np.nan
    city[rng.random(rows) < 0.07] = None
    frame = pd.DataFrame(
        {"edge": edge, "age": age, "income": income, "score": score, "rating": rating, "city": city, "plan": plan}
    )
    signal = (
        upper * 1.5
        + np.nan_to_num(age, nan=45) / 20
        + np.log(np.nan_to_num(income, nan=20000)) / 3
        + np.nan_to_num(score)
        + rating / 2
        + (plan == "pro")
        + (city == "north") * 0.7
    )
    if task == "regression":
        return frame, pd.Series(signal * 10 + rng.normal(0, 1, rows), name="y")
    if task == "binary":
        return frame, pd.Series(np.where(signal + rng.normal(0, 0.5, rows) > np.median(signal), "yes", "no"), name="y")
    cuts = np.quantile(signal, [1 / 3, 2 / 3])
    return frame, pd.Series(np.array(["low", "mid", "high"])[np.digitize(signal + rng.normal(0, 0.3, rows), cuts)])
