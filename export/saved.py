"""A pipeline the user saved with joblib: loaded, and checked to be a fitted scikit-learn estimator.

Loading runs pickles, so `export pipeline` says to load only files you trust; what goes wrong short of
that (not a pickle, a dict, a class or module this Python lacks, an estimator never fitted) is named,
with the file, instead of a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class SavedModelError(Exception):
    """The file holds no fitted estimator this Python can load; the message names the file and the fix."""


def load_fitted(path: Path) -> Any:
    """The fitted scikit-learn estimator (or pipeline) in a joblib file."""
    import joblib
    from sklearn.base import BaseEstimator
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    try:
        loaded = joblib.load(path)
    except ModuleNotFoundError as exc:  # a custom step whose module is not importable here
        raise SavedModelError(
            f"{path} needs module {exc.name!r}, which this Python cannot import: install it, or put it on PYTHONPATH"
        ) from exc
    except AttributeError as exc:  # "Can't get attribute 'Double' on <module '__main__'>"
        raise SavedModelError(
            f"{path} needs a class this Python cannot find ({exc}): define custom steps in a module that is "
            "importable here, not in a notebook or the script that saved the pipeline"
        ) from exc
    except Exception as exc:  # joblib raises whatever unpickling garbage raises: KeyError, EOFError, ...
        raise SavedModelError(f"{path} is not a joblib file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(loaded, BaseEstimator) or not hasattr(loaded, "predict"):
        raise SavedModelError(
            f"{path} holds a {type(loaded).__name__}, not a scikit-learn estimator or pipeline with predict"
        )
    try:
        check_is_fitted(loaded)
    except NotFittedError as exc:
        raise SavedModelError(f"{path} holds an estimator that was never fitted") from exc
    return loaded
