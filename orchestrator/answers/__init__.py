"""A run as answers: the report, the comparison of two runs, JUnit, budgets."""
