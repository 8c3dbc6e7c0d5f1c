-- Stage hive_upload: predictions into hive_table, one partition per workflow task.
-- OVERWRITE makes a re-run replace the partition instead of adding rows.
CREATE DATABASE IF NOT EXISTS `{{ database }}`;
CREATE TABLE IF NOT EXISTS `{{ database }}`.`{{ table }}` (
{%- for column, hive_type in columns %}
  `{{ column }}` {{ hive_type }}{{ "," if not loop.last }}
{%- endfor %}
)
PARTITIONED BY (`{{ partition_column }}` BIGINT)
STORED AS PARQUET;
LOAD DATA INPATH '{{ directory }}' OVERWRITE INTO TABLE `{{ database }}`.`{{ table }}`
PARTITION (`{{ partition_column }}` = {{ task_id }});
