"""scikit-learn-style estimators that pair a model with its fitting procedures."""
