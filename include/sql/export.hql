-- Stage data_fetch: the task's two queries, exported as Parquet (keeps column names and types).
-- Rendered by operators/hive.py: each query is sql_query.py's one-line rendering of a checked
-- SELECT. The session settings run before either: variable substitution off, and on Spark,
-- SQL on files off (sql_query.session_settings).
{% for statement in session_settings %}
{{ statement }};
{% endfor %}
{% for dataset in datasets %}
INSERT OVERWRITE DIRECTORY '{{ dataset.directory | hive_string }}' STORED AS PARQUET {{ dataset.sql }};
{% endfor %}
