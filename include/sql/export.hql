-- Stage data_fetch: the task's two queries, exported as Parquet (keeps column names and types).
-- Rendered by operators/hive.py with values validated first: each query is one SELECT.
{% for dataset in datasets %}
INSERT OVERWRITE DIRECTORY '{{ dataset.directory | hive_string }}' STORED AS PARQUET
{{ dataset.sql }};
{% endfor %}
