"""Evaluation: online judges and code checks over every turn and conversation, offline dataset
runs and their comparison, and the `python -m evals` CLI.

Imports runtime/ (a dataset run uses the app's own agents), agent/, llms/, feedback/, config/;
never dashboard/ or the app.
"""
