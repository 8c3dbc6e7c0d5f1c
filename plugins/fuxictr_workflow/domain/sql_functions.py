"""The built-in functions a user query may call: Hive's and Spark's, less the dangerous ones.

HIVE is Hive's system function registry (scalar, aggregate, window and table functions),
SPARK what the Spark Thrift Server's `SHOW FUNCTIONS` lists; names of operators (`+`, `<>`)
are syntax, not calls, and are not here. Each dialect has its own allowlist
(`ALLOWED_BY_DIALECT`): a name only one of them defines is, on the other server, looked up
as a user or session function (arbitrary Java code someone registered under that name), so
it is refused there. DENIED take a class, method, file name or URL from the query and act
on the server, so they are refused although built in.
"""

from __future__ import annotations

HIVE = frozenset(
    """
    abs acos add_months aes_decrypt aes_encrypt and array array_contains ascii asin assert_true
    atan avg base64 between bigint bin binary boolean bround case cbrt ceil ceiling char
    char_length character_length chr coalesce collect_list collect_set concat concat_ws
    context_ngrams conv corr cos count covar_pop covar_samp crc32 create_union cume_dist
    current_database current_date current_groups current_timestamp current_user date date_add
    date_format date_sub datediff day dayofmonth dayofweek decimal decode degrees dense_rank div
    double e elt encode exp explode extract_union factorial field find_in_set first_value float
    floor floor_day floor_hour floor_minute floor_month floor_quarter floor_second floor_week
    floor_year format_number from_unixtime from_utc_timestamp get_json_object greatest grouping
    hash hex histogram_numeric hour if in index initcap inline instr int interval_day_time
    interval_year_month isfalse isnotfalse isnotnull isnottrue isnull istrue json_tuple lag
    last_day last_value lcase lead least length levenshtein like likeall likeany ln locate log
    log10 log2 logged_in_user lower lpad ltrim map map_keys map_values mask mask_first_n
    mask_hash mask_last_n mask_show_first_n mask_show_last_n max md5 min minute mod month
    months_between murmur_hash named_struct negative next_day ngrams not ntile nullif nvl
    octet_length or parse_url parse_url_tuple percent_rank percentile percentile_approx pi pmod
    posexplode positive pow power printf quarter radians rand rank regexp regexp_extract
    regexp_replace regr_avgx regr_avgy regr_count regr_intercept regr_r2 regr_slope regr_sxx
    regr_sxy regr_syy repeat replace reverse rlike round row_number rpad rtrim second sentences
    sha sha1 sha2 shiftleft shiftright shiftrightunsigned sign sin size smallint sort_array
    sort_array_by soundex space split sqrt stack std stddev stddev_pop stddev_samp str_to_map
    string struct substr substring substring_index sum surrogate_key tan timestamp tinyint
    to_date to_epoch_milli to_unix_timestamp to_utc_timestamp translate trim trunc ucase
    unbase64 unhex unix_timestamp upper uuid var_pop var_samp varchar variance version
    weekofyear when width_bucket year
    """.split()  # noqa: SIM905 - a word list reads better than hundreds of quoted names
)

SPARK = frozenset(
    """
    abs acos acosh add_months aes_decrypt aes_encrypt aggregate and any any_value
    approx_count_distinct approx_percentile approx_top_k approx_top_k_accumulate
    approx_top_k_combine approx_top_k_estimate array array_agg array_append array_compact
    array_contains array_distinct array_except array_insert array_intersect array_join array_max
    array_min array_position array_prepend array_remove array_repeat array_size array_sort
    array_union arrays_overlap arrays_zip ascii asin asinh assert_true atan atan2 atanh avg
    base64 between bigint bin binary bit_and bit_count bit_get bit_length bit_or bit_xor
    bitmap_and_agg bitmap_bit_position bitmap_bucket_number bitmap_construct_agg bitmap_count
    bitmap_or_agg bool_and bool_or boolean bround btrim cardinality case cast cbrt ceil ceiling
    char char_length character_length chr coalesce collate collation collations collect_list
    collect_set collect_union concat concat_ws contains conv convert_timezone corr cos cosh cot
    count count_if count_min_sketch counter_diff covar_pop covar_samp crc32 csc cume_dist
    curdate current_catalog current_database current_date current_path current_schema
    current_time current_timestamp current_timezone current_user date date_add date_diff
    date_format date_from_unix_date date_part date_sub date_trunc dateadd datediff datepart day
    dayname dayofmonth dayofweek dayofyear decimal decode degrees dense_rank div double e
    element_at elt encode endswith equal_null every exists exp explode explode_outer expm1
    extract factorial filter find_in_set first first_value flatten float floor forall
    format_number format_string from_avro from_base32 from_csv from_json from_protobuf
    from_unixtime from_utc_timestamp from_xml get get_json_object getbit greatest grouping
    grouping_id hash hex histogram_numeric hll_sketch_agg hll_sketch_estimate hll_union
    hll_union_agg hmac hour hypot if ifnull ilike in initcap inline inline_outer
    input_file_block_length input_file_block_start input_file_name instr int is_valid_utf8
    is_valid_variant is_variant_null isnan isnotnull isnull jaro_winkler_similarity java_method
    json_array_length json_object_keys json_tuple kll_merge_agg_bigint kll_merge_agg_double
    kll_merge_agg_float kll_sketch_agg_bigint kll_sketch_agg_double kll_sketch_agg_float
    kll_sketch_get_n_bigint kll_sketch_get_n_double kll_sketch_get_n_float
    kll_sketch_get_quantile_bigint kll_sketch_get_quantile_double kll_sketch_get_quantile_float
    kll_sketch_get_rank_bigint kll_sketch_get_rank_double kll_sketch_get_rank_float
    kll_sketch_merge_bigint kll_sketch_merge_double kll_sketch_merge_float
    kll_sketch_to_string_bigint kll_sketch_to_string_double kll_sketch_to_string_float kurtosis
    lag last last_day last_value lcase lead least left len length levenshtein like listagg ln
    localtime localtimestamp locate log log10 log1p log2 lower lpad ltrim luhn_check make_date
    make_dt_interval make_interval make_time make_timestamp make_timestamp_ltz
    make_timestamp_ntz make_valid_utf8 make_ym_interval map map_concat map_contains_key
    map_entries map_filter map_from_arrays map_from_entries map_keys map_values map_zip_with
    mask max max_by md5 mean measure median min min_by minute mod mode
    monotonically_increasing_id month monthname months_between named_struct nanvl negative
    next_day not now nth_value ntile nullif nullifzero nvl nvl2 octet_length or overlay
    parse_json parse_url percent_rank percentile percentile_approx percentile_cont
    percentile_disc pi pmod posexplode posexplode_outer position positive pow power printf
    python_worker_logs quarter quote radians raise_error rand randn random randstr range rank
    reduce reflect regexp regexp_count regexp_extract regexp_extract_all regexp_instr
    regexp_like regexp_replace regexp_substr regr_avgx regr_avgy regr_count regr_intercept
    regr_r2 regr_slope regr_sxx regr_sxy regr_syy repeat replace reverse right rint rlike round
    row_number rpad rtrim schema_of_avro schema_of_csv schema_of_json schema_of_variant
    schema_of_variant_agg schema_of_xml sec second sentences sequence session_user
    session_window sha sha1 sha2 shiftleft shiftright shiftrightunsigned shuffle sign signum sin
    sinh size skewness slice smallint some sort_array soundex space spark_partition_id split
    split_part sql_keywords sqrt st_asbinary st_geogfromwkb st_geomfromwkb st_setsrid st_srid
    stack startswith std stddev stddev_pop stddev_samp str_to_map string string_agg struct
    substr substring substring_index sum tan tanh theta_difference theta_intersection
    theta_intersection_agg theta_sketch_agg theta_sketch_estimate theta_union theta_union_agg
    time time_bucket time_diff time_from_micros time_from_millis time_from_seconds
    time_to_micros time_to_millis time_to_seconds time_trunc timestamp timestamp_micros
    timestamp_millis timestamp_nanos timestamp_seconds tinyint to_avro to_base32 to_binary
    to_char to_csv to_date to_json to_number to_protobuf to_time to_timestamp to_timestamp_ltz
    to_timestamp_ntz to_unix_timestamp to_utc_timestamp to_varchar to_variant_object to_xml
    transform transform_keys transform_values translate trim trunc try_add try_aes_decrypt
    try_avg try_divide try_element_at try_make_interval try_make_timestamp
    try_make_timestamp_ltz try_make_timestamp_ntz try_mod try_multiply try_parse_json
    try_parse_url try_reflect try_subtract try_sum try_to_binary try_to_date try_to_number
    try_to_time try_to_timestamp try_url_decode try_validate_utf8 try_variant_array_append
    try_variant_get try_variant_insert try_variant_set tuple_difference_double
    tuple_difference_integer tuple_difference_theta_double tuple_difference_theta_integer
    tuple_intersection_agg_double tuple_intersection_agg_integer tuple_intersection_double
    tuple_intersection_integer tuple_intersection_theta_double tuple_intersection_theta_integer
    tuple_sketch_agg_double tuple_sketch_agg_integer tuple_sketch_estimate_double
    tuple_sketch_estimate_integer tuple_sketch_summary_double tuple_sketch_summary_integer
    tuple_sketch_theta_double tuple_sketch_theta_integer tuple_union_agg_double
    tuple_union_agg_integer tuple_union_double tuple_union_integer tuple_union_theta_double
    tuple_union_theta_integer typeof ucase unbase64 unhex uniform unix_date unix_micros
    unix_millis unix_nanos unix_seconds unix_timestamp upper url_decode url_encode user uuid
    validate_utf8 var_pop var_samp variance variant_array_append variant_delete variant_explode
    variant_explode_outer variant_get variant_insert variant_set variant_strip_nulls vector_avg
    vector_cosine_similarity vector_inner_product vector_l2_distance vector_norm
    vector_normalize vector_sum version weekday weekofyear when width_bucket window window_time
    xpath xpath_boolean xpath_double xpath_float xpath_int xpath_long xpath_number xpath_short
    xpath_string xxhash64 year zeroifnull zip_with
    """.split()  # noqa: SIM905 - a word list reads better than hundreds of quoted names
)

DENIED: dict[str, str] = {
    "reflect": "calls any Java method on the server",
    "reflect2": "calls a Java method on the server",
    "java_method": "calls any Java method on the server",
    "try_reflect": "calls any Java method on the server",
    "in_file": "reads a file on the server",
    "from_protobuf": "reads a descriptor file named by the query",
    "to_protobuf": "reads a descriptor file named by the query",
    "python_worker_logs": "reads the server's Python worker logs",
    # spark-avro's options take `avroSchemaUrl`: the server opens any URL named there
    "from_avro": "opens the schema URL its options name (avroSchemaUrl)",
    "to_avro": "opens the schema URL its options name (avroSchemaUrl)",
    "schema_of_avro": "opens the schema URL its options name (avroSchemaUrl)",
    "from_xml": "is an XML function (XML entities can read files on the server)",
    "schema_of_xml": "is an XML function (XML entities can read files on the server)",
    "to_xml": "is an XML function (XML entities can read files on the server)",
    "xpath": "is an XML function (XML entities can read files on the server)",
    "xpath_boolean": "is an XML function (XML entities can read files on the server)",
    "xpath_double": "is an XML function (XML entities can read files on the server)",
    "xpath_float": "is an XML function (XML entities can read files on the server)",
    "xpath_int": "is an XML function (XML entities can read files on the server)",
    "xpath_long": "is an XML function (XML entities can read files on the server)",
    "xpath_number": "is an XML function (XML entities can read files on the server)",
    "xpath_short": "is an XML function (XML entities can read files on the server)",
    "xpath_string": "is an XML function (XML entities can read files on the server)",
}

ALLOWED_BY_DIALECT: dict[str, frozenset[str]] = {
    "hive": HIVE - DENIED.keys(),
    "spark": SPARK - DENIED.keys(),
}


def allowed(dialect: str) -> frozenset[str]:
    """The functions a query for `dialect`'s server may call."""
    return ALLOWED_BY_DIALECT[dialect]
