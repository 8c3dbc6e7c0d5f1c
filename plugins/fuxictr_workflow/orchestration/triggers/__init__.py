"""Triggers the stage operators defer to (run in Airflow's triggerer)."""
