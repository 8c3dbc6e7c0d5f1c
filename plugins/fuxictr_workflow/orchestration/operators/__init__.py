"""Thin Airflow operators over the plain-Python stage engines."""
