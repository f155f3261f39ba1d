"""The seed article's approach, as the benchmark's baseline: Flask's own server, scikit-learn per request.

It trains the same example pipeline in-process (no pickles cross a boundary), takes the same V2 JSON
body tabserve takes, and calls `predict_proba` on a one-request DataFrame each time, as the article's
`/predict` calls `model.predict([[age]])`. Run: python -m loadtest.flask_baseline --port 5000.
"""

from __future__ import annotations

import logging
from typing import Any

import click
import numpy as np
import pandas as pd
from flask import Flask, jsonify, request


def create_flask_app(example: str) -> Flask:
    from export.examples import EXAMPLES, train_example

    trained = train_example(EXAMPLES[example])
    pipeline: Any = trained.pipeline
    columns = list(trained.train_frame.columns)
    app = Flask(__name__)

    @app.post("/v2/models/<name>/infer")
    def infer(name: str) -> Any:
        document = request.get_json(force=True)
        data = {tensor["name"]: tensor["data"] for tensor in document["inputs"]}
        frame = pd.DataFrame({column: data[column] for column in columns})
        for column in columns:
            if trained.train_frame[column].dtype.kind == "f":
                frame[column] = frame[column].astype(np.float32)
        if hasattr(pipeline, "predict_proba"):
            outputs = {
                "label": pipeline.predict(frame).tolist(),
                "probabilities": pipeline.predict_proba(frame).tolist(),
            }
        else:
            outputs = {"variable": pipeline.predict(frame).tolist()}
        return jsonify(
            {"model_name": name, "outputs": [{"name": key, "data": value} for key, value in outputs.items()]}
        )

    @app.get("/v2/health/ready")
    def ready() -> Any:
        return jsonify({"ready": True})

    return app


@click.command()
@click.option("--port", type=int, default=5000)
@click.option("--example", default="penguins")
def main(port: int, example: str) -> None:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    create_flask_app(example).run(host="127.0.0.1", port=port, threaded=True)


if __name__ == "__main__":
    main()
