"""Small data for the scikit-learn tests: a mixed-type table with missing values, and its config."""

from __future__ import annotations

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("skops")

NUMERIC = ["age", "income", "credit_score"]
CATEGORICAL = ["occupation", "region", "education"]


def credit_table(n: int = 240, seed: int = 0):
    """Seed 003's columns: numbers and categories, ~10% missing in two of them, a learnable binary target."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "age": rng.integers(18, 80, n).astype(float),
            "income": rng.normal(50_000, 15_000, n),
            "credit_score": rng.normal(650, 80, n),
            "occupation": rng.choice(["engineer", "teacher", "nurse", "sales"], n).astype(object),
            "region": rng.choice(["north", "south", "east"], n).astype(object),
            "education": rng.choice(["hs", "bsc", "msc", "phd"], n).astype(object),
        }
    )
    score = (df["credit_score"] - 650) / 80 + 0.8 * (df["region"] == "south") - 0.5 * (df["education"] == "hs")
    df["approved"] = (score + rng.normal(0, 0.5, n) > 0).astype(int)
    df.loc[rng.random(n) < 0.1, "income"] = np.nan
    df.loc[rng.random(n) < 0.1, "occupation"] = None
    return df


@pytest.fixture
def credit():
    return credit_table()


@pytest.fixture
def config(tmp_path):
    from trainengine import TrainingConfigBuilder

    return (
        TrainingConfigBuilder()
        .with_tracking(output_dir=str(tmp_path / "runs"), experiment_name="credit", progress="off")
        .build()
    )


def small_pipeline(n_estimators: int = 20):
    """Seed 003's pipeline, smaller (fewer trees) so a test fits it in well under a second."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = Pipeline([("imputer", SimpleImputer(strategy="median")), ("scaler", StandardScaler())])
    categorical = Pipeline(
        [
            ("imputer", SimpleImputer(strategy="most_frequent")),
            ("encoder", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ]
    )
    pre = ColumnTransformer([("num", numeric, NUMERIC), ("cat", categorical, CATEGORICAL)])
    return Pipeline(
        [("preprocessor", pre), ("classifier", GradientBoostingClassifier(n_estimators=n_estimators, max_depth=2))]
    )


@pytest.fixture
def pipeline():
    return small_pipeline()


@pytest.fixture
def make_pipeline():
    """``make_pipeline(n_estimators=20)``: a fresh seed-003-shaped pipeline."""
    return small_pipeline


@pytest.fixture
def make_table():
    """``make_table(n=240, seed=0)``: a fresh credit table."""
    return credit_table
