"""LightGBM and XGBoost inside scikit-learn pipelines: onnxmltools' converters registered with skl2onnx.

Optional (`pip install -e ".[gbm]"`): without the packages nothing is registered and `--estimator lgbm`
or `xgb` says what to install. XGBoost's scikit-learn classifier wants labels 0..k-1, so `XGBLabelClassifier`
encodes whatever labels it is given and keeps them as `classes_`: predictions come back as the names,
and the converter writes them into the graph as its string labels, as it does for every other classifier.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any

import numpy as np
import numpy.typing as npt

GBM_EXTRA = 'pip install -e ".[gbm]"'
"""What to run when LightGBM, XGBoost or onnxmltools is missing."""


def available() -> bool:
    """Whether LightGBM, XGBoost and onnxmltools can all be imported."""
    return all(importlib.util.find_spec(name) for name in ("lightgbm", "xgboost", "onnxmltools"))


def require() -> None:
    """Raise ValueError naming the extra to install when the boosters are missing."""
    if not available():
        raise ValueError(f"LightGBM and XGBoost need the gbm extra: {GBM_EXTRA}")


def xgb_label_classifier() -> type:
    """The XGBClassifier that takes any labels (defined lazily: xgboost is optional)."""
    require()
    return _xgb_label_classifier()


@functools.cache
def _xgb_label_classifier() -> type:
    from sklearn.preprocessing import LabelEncoder
    from xgboost import XGBClassifier

    class XGBLabelClassifier(XGBClassifier):
        """XGBClassifier over label-encoded targets; `classes_` and predictions are the original labels."""

        def fit(self, X: Any, y: Any, **kwargs: Any) -> XGBLabelClassifier:
            encoder = LabelEncoder().fit(y)
            self.__dict__.pop("labels_", None)  # XGBClassifier.fit checks classes_ against 0..k-1
            super().fit(X, encoder.transform(y), **kwargs)
            self.labels_ = encoder.classes_
            return self

        @property
        def classes_(self) -> npt.NDArray[Any]:
            labels = self.__dict__.get("labels_")
            return np.asarray(super().classes_ if labels is None else labels)

        def predict(self, X: Any, **kwargs: Any) -> npt.NDArray[Any]:
            return np.asarray(self.classes_[np.argmax(self.predict_proba(X, **kwargs), axis=1)])

    # A stable, importable name: GridSearchCV clones estimators and joblib pickles them by qualified name.
    XGBLabelClassifier.__module__ = __name__
    XGBLabelClassifier.__qualname__ = "XGBLabelClassifier"
    globals()["XGBLabelClassifier"] = XGBLabelClassifier
    return XGBLabelClassifier


def __getattr__(name: str) -> Any:
    # Unpickling a pipeline that holds an XGBLabelClassifier finds the class here.
    if name == "XGBLabelClassifier":
        return _xgb_label_classifier()
    raise AttributeError(name)


@functools.cache
def register_boosters() -> bool:
    """Register the LightGBM and XGBoost converters with skl2onnx once; False when not installed."""
    if not available():
        return False
    from lightgbm import LGBMClassifier, LGBMRegressor
    from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )
    from xgboost import XGBClassifier, XGBRegressor

    def convert_xgboost_by_position(scope: Any, operator: Any, container: Any) -> None:
        # onnxmltools reads splits as "f<index>"; a booster fitted on a DataFrame names them after its
        # columns instead ("Unable to interpret 'age'"). Without names the dump says f0, f1, ... in column
        # order, which is what the converter's input holds: drop them for the conversion only.
        booster = operator.raw_operator.get_booster()
        names = booster.feature_names
        booster.feature_names = None
        try:
            convert_xgboost(scope, operator, container)
        finally:
            booster.feature_names = names

    classifier_options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    for kind, alias, converter in (
        (LGBMClassifier, "LightGbmLGBMClassifier", convert_lightgbm),
        (XGBClassifier, "XGBoostXGBClassifier", convert_xgboost_by_position),
        (xgb_label_classifier(), "TabserveXGBLabelClassifier", convert_xgboost_by_position),
    ):
        update_registered_converter(
            kind, alias, calculate_linear_classifier_output_shapes, converter, options=classifier_options
        )
    for kind, alias, converter in (
        (LGBMRegressor, "LightGbmLGBMRegressor", convert_lightgbm),
        (XGBRegressor, "XGBoostXGBRegressor", convert_xgboost_by_position),
    ):
        update_registered_converter(kind, alias, calculate_linear_regressor_output_shapes, converter)
    return True
