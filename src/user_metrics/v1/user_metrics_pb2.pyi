import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Window(_message.Message):
    __slots__ = ("since", "until")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    since: str
    until: str
    def __init__(self, since: _Optional[str] = ..., until: _Optional[str] = ...) -> None: ...

class Filters(_message.Message):
    __slots__ = ("properties", "model", "service", "environment")
    class PropertiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    properties: _containers.ScalarMap[str, str]
    model: str
    service: str
    environment: str
    def __init__(self, properties: _Optional[_Mapping[str, str]] = ..., model: _Optional[str] = ..., service: _Optional[str] = ..., environment: _Optional[str] = ...) -> None: ...

class ListUsersRequest(_message.Message):
    __slots__ = ("window", "filters", "sort", "limit", "offset", "search", "tz")
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    SORT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    TZ_FIELD_NUMBER: _ClassVar[int]
    window: Window
    filters: Filters
    sort: str
    limit: int
    offset: int
    search: str
    tz: str
    def __init__(self, window: _Optional[_Union[Window, _Mapping]] = ..., filters: _Optional[_Union[Filters, _Mapping]] = ..., sort: _Optional[str] = ..., limit: _Optional[int] = ..., offset: _Optional[int] = ..., search: _Optional[str] = ..., tz: _Optional[str] = ...) -> None: ...

class GetUserRequest(_message.Message):
    __slots__ = ("user_id", "anonymous", "window", "filters", "tz")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ANONYMOUS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    TZ_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    anonymous: bool
    window: Window
    filters: Filters
    tz: str
    def __init__(self, user_id: _Optional[str] = ..., anonymous: _Optional[bool] = ..., window: _Optional[_Union[Window, _Mapping]] = ..., filters: _Optional[_Union[Filters, _Mapping]] = ..., tz: _Optional[str] = ...) -> None: ...

class GetTimeseriesRequest(_message.Message):
    __slots__ = ("user_id", "window", "filters", "bucket", "tz")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    TZ_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    window: Window
    filters: Filters
    bucket: str
    tz: str
    def __init__(self, user_id: _Optional[str] = ..., window: _Optional[_Union[Window, _Mapping]] = ..., filters: _Optional[_Union[Filters, _Mapping]] = ..., bucket: _Optional[str] = ..., tz: _Optional[str] = ...) -> None: ...

class GetPropertyBreakdownRequest(_message.Message):
    __slots__ = ("key", "window", "filters", "limit", "tz")
    KEY_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    TZ_FIELD_NUMBER: _ClassVar[int]
    key: str
    window: Window
    filters: Filters
    limit: int
    tz: str
    def __init__(self, key: _Optional[str] = ..., window: _Optional[_Union[Window, _Mapping]] = ..., filters: _Optional[_Union[Filters, _Mapping]] = ..., limit: _Optional[int] = ..., tz: _Optional[str] = ...) -> None: ...

class GetTotalsRequest(_message.Message):
    __slots__ = ("window", "filters", "tz")
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    TZ_FIELD_NUMBER: _ClassVar[int]
    window: Window
    filters: Filters
    tz: str
    def __init__(self, window: _Optional[_Union[Window, _Mapping]] = ..., filters: _Optional[_Union[Filters, _Mapping]] = ..., tz: _Optional[str] = ...) -> None: ...

class GetCoverageRequest(_message.Message):
    __slots__ = ("window", "filters", "limit", "tz")
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    TZ_FIELD_NUMBER: _ClassVar[int]
    window: Window
    filters: Filters
    limit: int
    tz: str
    def __init__(self, window: _Optional[_Union[Window, _Mapping]] = ..., filters: _Optional[_Union[Filters, _Mapping]] = ..., limit: _Optional[int] = ..., tz: _Optional[str] = ...) -> None: ...

class GetRecentRequestsRequest(_message.Message):
    __slots__ = ("user_id", "anonymous", "window", "filters", "limit", "tz")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ANONYMOUS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    TZ_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    anonymous: bool
    window: Window
    filters: Filters
    limit: int
    tz: str
    def __init__(self, user_id: _Optional[str] = ..., anonymous: _Optional[bool] = ..., window: _Optional[_Union[Window, _Mapping]] = ..., filters: _Optional[_Union[Filters, _Mapping]] = ..., limit: _Optional[int] = ..., tz: _Optional[str] = ...) -> None: ...

class ListPropertyKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetAnomaliesRequest(_message.Message):
    __slots__ = ("window", "history", "threshold", "tz")
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    TZ_FIELD_NUMBER: _ClassVar[int]
    window: Window
    history: str
    threshold: float
    tz: str
    def __init__(self, window: _Optional[_Union[Window, _Mapping]] = ..., history: _Optional[str] = ..., threshold: _Optional[float] = ..., tz: _Optional[str] = ...) -> None: ...

class ModelUsage(_message.Message):
    __slots__ = ("provider", "model", "requests", "cost_usd", "unpriced_requests")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    UNPRICED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    provider: str
    model: str
    requests: int
    cost_usd: str
    unpriced_requests: int
    def __init__(self, provider: _Optional[str] = ..., model: _Optional[str] = ..., requests: _Optional[int] = ..., cost_usd: _Optional[str] = ..., unpriced_requests: _Optional[int] = ...) -> None: ...

class UserStats(_message.Message):
    __slots__ = ("user_id", "requests", "errors", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "total_tokens", "cost_usd", "unpriced_requests", "first_active", "last_active", "active_days", "avg_requests_per_active_day", "avg_tokens_per_request", "avg_latency_ms", "p50_latency_ms", "p95_latency_ms", "error_rate", "models", "revenue_usd", "margin_usd", "margin_ratio")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_READ_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REASONING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    UNPRICED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    FIRST_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    LAST_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_DAYS_FIELD_NUMBER: _ClassVar[int]
    AVG_REQUESTS_PER_ACTIVE_DAY_FIELD_NUMBER: _ClassVar[int]
    AVG_TOKENS_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    AVG_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    P50_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    P95_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    REVENUE_USD_FIELD_NUMBER: _ClassVar[int]
    MARGIN_USD_FIELD_NUMBER: _ClassVar[int]
    MARGIN_RATIO_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    requests: int
    errors: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    total_tokens: int
    cost_usd: str
    unpriced_requests: int
    first_active: _timestamp_pb2.Timestamp
    last_active: _timestamp_pb2.Timestamp
    active_days: int
    avg_requests_per_active_day: float
    avg_tokens_per_request: float
    avg_latency_ms: float
    p50_latency_ms: float
    p95_latency_ms: float
    error_rate: float
    models: _containers.RepeatedCompositeFieldContainer[ModelUsage]
    revenue_usd: str
    margin_usd: str
    margin_ratio: float
    def __init__(self, user_id: _Optional[str] = ..., requests: _Optional[int] = ..., errors: _Optional[int] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cache_read_tokens: _Optional[int] = ..., cache_write_tokens: _Optional[int] = ..., reasoning_tokens: _Optional[int] = ..., total_tokens: _Optional[int] = ..., cost_usd: _Optional[str] = ..., unpriced_requests: _Optional[int] = ..., first_active: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_active: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., active_days: _Optional[int] = ..., avg_requests_per_active_day: _Optional[float] = ..., avg_tokens_per_request: _Optional[float] = ..., avg_latency_ms: _Optional[float] = ..., p50_latency_ms: _Optional[float] = ..., p95_latency_ms: _Optional[float] = ..., error_rate: _Optional[float] = ..., models: _Optional[_Iterable[_Union[ModelUsage, _Mapping]]] = ..., revenue_usd: _Optional[str] = ..., margin_usd: _Optional[str] = ..., margin_ratio: _Optional[float] = ...) -> None: ...

class UserPage(_message.Message):
    __slots__ = ("users", "total", "since", "until")
    USERS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    users: _containers.RepeatedCompositeFieldContainer[UserStats]
    total: int
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    def __init__(self, users: _Optional[_Iterable[_Union[UserStats, _Mapping]]] = ..., total: _Optional[int] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Point(_message.Message):
    __slots__ = ("start", "requests", "errors", "input_tokens", "output_tokens", "total_tokens", "cost_usd", "unpriced_requests")
    START_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    UNPRICED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    start: _timestamp_pb2.Timestamp
    requests: int
    errors: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cost_usd: str
    unpriced_requests: int
    def __init__(self, start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., requests: _Optional[int] = ..., errors: _Optional[int] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., total_tokens: _Optional[int] = ..., cost_usd: _Optional[str] = ..., unpriced_requests: _Optional[int] = ...) -> None: ...

class PropertyKeys(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, keys: _Optional[_Iterable[str]] = ...) -> None: ...

class RequestRecord(_message.Message):
    __slots__ = ("start_time", "trace_id", "span_id", "duration_ms", "session_id", "service_name", "environment", "operation", "provider", "model", "input_tokens", "output_tokens", "total_tokens", "cost_usd", "status", "error_type", "streaming", "properties")
    class PropertiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    STREAMING_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    trace_id: str
    span_id: str
    duration_ms: float
    session_id: str
    service_name: str
    environment: str
    operation: str
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cost_usd: str
    status: str
    error_type: str
    streaming: bool
    properties: _containers.ScalarMap[str, str]
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., trace_id: _Optional[str] = ..., span_id: _Optional[str] = ..., duration_ms: _Optional[float] = ..., session_id: _Optional[str] = ..., service_name: _Optional[str] = ..., environment: _Optional[str] = ..., operation: _Optional[str] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., total_tokens: _Optional[int] = ..., cost_usd: _Optional[str] = ..., status: _Optional[str] = ..., error_type: _Optional[str] = ..., streaming: _Optional[bool] = ..., properties: _Optional[_Mapping[str, str]] = ...) -> None: ...

class RecentRequests(_message.Message):
    __slots__ = ("user_id", "since", "until", "requests")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    requests: _containers.RepeatedCompositeFieldContainer[RequestRecord]
    def __init__(self, user_id: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., requests: _Optional[_Iterable[_Union[RequestRecord, _Mapping]]] = ...) -> None: ...

class Timeseries(_message.Message):
    __slots__ = ("user_id", "bucket", "since", "until", "points", "tz")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    TZ_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    bucket: str
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    points: _containers.RepeatedCompositeFieldContainer[Point]
    tz: str
    def __init__(self, user_id: _Optional[str] = ..., bucket: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., points: _Optional[_Iterable[_Union[Point, _Mapping]]] = ..., tz: _Optional[str] = ...) -> None: ...

class PropertyValue(_message.Message):
    __slots__ = ("value", "users", "requests", "cost_usd", "avg_cost_per_user", "unpriced_requests", "most_costly_user", "most_costly_user_cost_usd", "least_costly_user", "least_costly_user_cost_usd", "revenue_usd", "margin_usd", "margin_ratio")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    AVG_COST_PER_USER_FIELD_NUMBER: _ClassVar[int]
    UNPRICED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    MOST_COSTLY_USER_FIELD_NUMBER: _ClassVar[int]
    MOST_COSTLY_USER_COST_USD_FIELD_NUMBER: _ClassVar[int]
    LEAST_COSTLY_USER_FIELD_NUMBER: _ClassVar[int]
    LEAST_COSTLY_USER_COST_USD_FIELD_NUMBER: _ClassVar[int]
    REVENUE_USD_FIELD_NUMBER: _ClassVar[int]
    MARGIN_USD_FIELD_NUMBER: _ClassVar[int]
    MARGIN_RATIO_FIELD_NUMBER: _ClassVar[int]
    value: str
    users: int
    requests: int
    cost_usd: str
    avg_cost_per_user: str
    unpriced_requests: int
    most_costly_user: str
    most_costly_user_cost_usd: str
    least_costly_user: str
    least_costly_user_cost_usd: str
    revenue_usd: str
    margin_usd: str
    margin_ratio: float
    def __init__(self, value: _Optional[str] = ..., users: _Optional[int] = ..., requests: _Optional[int] = ..., cost_usd: _Optional[str] = ..., avg_cost_per_user: _Optional[str] = ..., unpriced_requests: _Optional[int] = ..., most_costly_user: _Optional[str] = ..., most_costly_user_cost_usd: _Optional[str] = ..., least_costly_user: _Optional[str] = ..., least_costly_user_cost_usd: _Optional[str] = ..., revenue_usd: _Optional[str] = ..., margin_usd: _Optional[str] = ..., margin_ratio: _Optional[float] = ...) -> None: ...

class PropertyBreakdown(_message.Message):
    __slots__ = ("key", "since", "until", "values", "total_values", "truncated")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_VALUES_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    key: str
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    values: _containers.RepeatedCompositeFieldContainer[PropertyValue]
    total_values: int
    truncated: bool
    def __init__(self, key: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., values: _Optional[_Iterable[_Union[PropertyValue, _Mapping]]] = ..., total_values: _Optional[int] = ..., truncated: _Optional[bool] = ...) -> None: ...

class Totals(_message.Message):
    __slots__ = ("since", "until", "users", "anonymous_requests", "requests", "errors", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "total_tokens", "cost_usd", "unpriced_requests", "avg_latency_ms", "revenue_usd", "margin_usd", "margin_ratio")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    ANONYMOUS_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_READ_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_WRITE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REASONING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    UNPRICED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    AVG_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    REVENUE_USD_FIELD_NUMBER: _ClassVar[int]
    MARGIN_USD_FIELD_NUMBER: _ClassVar[int]
    MARGIN_RATIO_FIELD_NUMBER: _ClassVar[int]
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    users: int
    anonymous_requests: int
    requests: int
    errors: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    total_tokens: int
    cost_usd: str
    unpriced_requests: int
    avg_latency_ms: float
    revenue_usd: str
    margin_usd: str
    margin_ratio: float
    def __init__(self, since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., users: _Optional[int] = ..., anonymous_requests: _Optional[int] = ..., requests: _Optional[int] = ..., errors: _Optional[int] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cache_read_tokens: _Optional[int] = ..., cache_write_tokens: _Optional[int] = ..., reasoning_tokens: _Optional[int] = ..., total_tokens: _Optional[int] = ..., cost_usd: _Optional[str] = ..., unpriced_requests: _Optional[int] = ..., avg_latency_ms: _Optional[float] = ..., revenue_usd: _Optional[str] = ..., margin_usd: _Optional[str] = ..., margin_ratio: _Optional[float] = ...) -> None: ...

class Anomaly(_message.Message):
    __slots__ = ("user_id", "metric", "method", "observed", "baseline", "score", "history_buckets")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    HISTORY_BUCKETS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    metric: str
    method: str
    observed: float
    baseline: float
    score: float
    history_buckets: int
    def __init__(self, user_id: _Optional[str] = ..., metric: _Optional[str] = ..., method: _Optional[str] = ..., observed: _Optional[float] = ..., baseline: _Optional[float] = ..., score: _Optional[float] = ..., history_buckets: _Optional[int] = ...) -> None: ...

class Anomalies(_message.Message):
    __slots__ = ("since", "until", "history_since", "bucket_hours", "findings")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    HISTORY_SINCE_FIELD_NUMBER: _ClassVar[int]
    BUCKET_HOURS_FIELD_NUMBER: _ClassVar[int]
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    history_since: _timestamp_pb2.Timestamp
    bucket_hours: int
    findings: _containers.RepeatedCompositeFieldContainer[Anomaly]
    def __init__(self, since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., history_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., bucket_hours: _Optional[int] = ..., findings: _Optional[_Iterable[_Union[Anomaly, _Mapping]]] = ...) -> None: ...

class ScopeCoverage(_message.Message):
    __slots__ = ("service_name", "scope_name", "scope_version", "requests", "with_user", "with_session", "with_cost", "user_share", "session_share", "cost_share")
    SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    SCOPE_NAME_FIELD_NUMBER: _ClassVar[int]
    SCOPE_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    WITH_USER_FIELD_NUMBER: _ClassVar[int]
    WITH_SESSION_FIELD_NUMBER: _ClassVar[int]
    WITH_COST_FIELD_NUMBER: _ClassVar[int]
    USER_SHARE_FIELD_NUMBER: _ClassVar[int]
    SESSION_SHARE_FIELD_NUMBER: _ClassVar[int]
    COST_SHARE_FIELD_NUMBER: _ClassVar[int]
    service_name: str
    scope_name: str
    scope_version: str
    requests: int
    with_user: int
    with_session: int
    with_cost: int
    user_share: float
    session_share: float
    cost_share: float
    def __init__(self, service_name: _Optional[str] = ..., scope_name: _Optional[str] = ..., scope_version: _Optional[str] = ..., requests: _Optional[int] = ..., with_user: _Optional[int] = ..., with_session: _Optional[int] = ..., with_cost: _Optional[int] = ..., user_share: _Optional[float] = ..., session_share: _Optional[float] = ..., cost_share: _Optional[float] = ...) -> None: ...

class KeyCount(_message.Message):
    __slots__ = ("key", "count")
    KEY_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    key: str
    count: int
    def __init__(self, key: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class ScopeKeys(_message.Message):
    __slots__ = ("service_name", "scope_name", "scope_version", "llm_spans", "llm_like_skipped", "skipped_span_names", "skipped_keys", "unread_keys")
    SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    SCOPE_NAME_FIELD_NUMBER: _ClassVar[int]
    SCOPE_VERSION_FIELD_NUMBER: _ClassVar[int]
    LLM_SPANS_FIELD_NUMBER: _ClassVar[int]
    LLM_LIKE_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_SPAN_NAMES_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_KEYS_FIELD_NUMBER: _ClassVar[int]
    UNREAD_KEYS_FIELD_NUMBER: _ClassVar[int]
    service_name: str
    scope_name: str
    scope_version: str
    llm_spans: int
    llm_like_skipped: int
    skipped_span_names: _containers.RepeatedCompositeFieldContainer[KeyCount]
    skipped_keys: _containers.RepeatedCompositeFieldContainer[KeyCount]
    unread_keys: _containers.RepeatedCompositeFieldContainer[KeyCount]
    def __init__(self, service_name: _Optional[str] = ..., scope_name: _Optional[str] = ..., scope_version: _Optional[str] = ..., llm_spans: _Optional[int] = ..., llm_like_skipped: _Optional[int] = ..., skipped_span_names: _Optional[_Iterable[_Union[KeyCount, _Mapping]]] = ..., skipped_keys: _Optional[_Iterable[_Union[KeyCount, _Mapping]]] = ..., unread_keys: _Optional[_Iterable[_Union[KeyCount, _Mapping]]] = ...) -> None: ...

class Coverage(_message.Message):
    __slots__ = ("since", "until", "scopes", "live", "live_since", "spans")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    LIVE_SINCE_FIELD_NUMBER: _ClassVar[int]
    SPANS_FIELD_NUMBER: _ClassVar[int]
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    scopes: _containers.RepeatedCompositeFieldContainer[ScopeCoverage]
    live: bool
    live_since: _timestamp_pb2.Timestamp
    spans: _containers.RepeatedCompositeFieldContainer[ScopeKeys]
    def __init__(self, since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., scopes: _Optional[_Iterable[_Union[ScopeCoverage, _Mapping]]] = ..., live: _Optional[bool] = ..., live_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., spans: _Optional[_Iterable[_Union[ScopeKeys, _Mapping]]] = ...) -> None: ...
