"""Dashboards: read-only summaries of the alliance, an institution, a problem and a run.

Each module holds the selectors of one dashboard (plain, typed values computed in a fixed
number of queries, whatever the size of the data) and its views stay thin.
"""
