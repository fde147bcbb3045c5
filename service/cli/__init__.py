"""The `hpo` command line: commands on top of the REST client."""
