-- Stage data_fetch: the task's two queries, exported as Parquet (keeps column names and types).
-- Rendered by operators/hive.py: each query is sql_query.py's one-line rendering of a checked
-- SELECT, and variable substitution is off before either runs.
{{ substitution_off }};
{% for dataset in datasets %}
INSERT OVERWRITE DIRECTORY '{{ dataset.directory | hive_string }}' STORED AS PARQUET {{ dataset.sql }};
{% endfor %}
