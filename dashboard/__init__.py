"""The owner's dashboard: what the store holds, as numbers (queries) and as a page (ui).

Imports evals/ (run comparison, the judge's view of a trace), feedback/ and config/; never the
app, runtime/ or agent/.
"""
