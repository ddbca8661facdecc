"""PostgreSQL front end: the sans-IO v3 wire protocol core and, later, the proxy."""
