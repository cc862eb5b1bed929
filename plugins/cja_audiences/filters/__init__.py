"""The filter library: three filter forms (template, rules, CJA segment) compiled by one
engine into DuckDB SQL with bound parameters."""
