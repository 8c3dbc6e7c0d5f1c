-- Stage hive_upload: predictions into hive_table, one partition per workflow task.
-- OVERWRITE makes a re-run replace the partition instead of adding rows. The table property
-- marks the table as ours: operators/hive.py loads only into tables that carry it.
CREATE DATABASE IF NOT EXISTS {{ database | ident }};
CREATE TABLE IF NOT EXISTS {{ database | ident }}.{{ table | ident }} (
{%- for column, hive_type in columns %}
  {{ column | ident }} {{ hive_type }}{{ "," if not loop.last }}
{%- endfor %}
)
PARTITIONED BY ({{ partition_column | ident }} BIGINT)
STORED AS PARQUET
TBLPROPERTIES ('{{ owner_property | hive_string }}' = '{{ owner_value | hive_string }}');
LOAD DATA INPATH '{{ directory | hive_string }}' OVERWRITE INTO TABLE {{ database | ident }}.{{ table | ident }}
PARTITION ({{ partition_column | ident }} = {{ task_id | int }});
