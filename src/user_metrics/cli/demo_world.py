"""The demo's world: the application and the plans of its users, the models they call, how those
models fail, when people work; and the values a planned trace is made of (``Trace`` of ``Call`` and
``Tool``, ``Profile``), with ``UserTruth``, what was sent for one user. ``demo_traffic.py`` plans
the traces from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

SERVICE_NAME = "support-bot"
ENVIRONMENT = "demo"
FEATURES = ("chat", "search", "summarize", "agent")
# plan -> (share of users, activity factor, weights of FEATURES)
PLANS = {
    "free": (0.5, 0.6, (0.6, 0.25, 0.15, 0.0)),
    "pro": (0.35, 1.0, (0.4, 0.2, 0.2, 0.2)),
    "enterprise": (0.15, 2.2, (0.3, 0.25, 0.2, 0.25)),
}
ERROR_RATE = 0.03
# Relative activity by local hour of day, and on Saturdays and Sundays.
HOURLY = (
    0.04, 0.03, 0.02, 0.02, 0.03, 0.05, 0.12, 0.3, 0.65, 0.95, 1.0, 1.0,
    0.8, 0.9, 1.0, 1.0, 0.95, 0.75, 0.5, 0.45, 0.45, 0.35, 0.2, 0.1,
)  # fmt: skip
WEEKEND = 0.35
TIMEZONES = ((-8.0, 3), (-5.0, 4), (0.0, 2), (1.0, 4), (5.5, 2), (9.0, 1))  # (UTC offset, weight)
TOOLS = ("search_knowledge_base", "get_order_status", "lookup_customer", "create_ticket", "refund_order")
FIRST_NAMES = (
    "maria", "james", "li", "aisha", "tom", "sofia", "raj", "emma", "kenji", "lucas",
    "nora", "omar", "priya", "felix", "chloe", "diego", "hana", "ivan", "julia", "kofi",
)  # fmt: skip
LAST_NAMES = (
    "garcia", "smith", "wei", "khan", "muller", "rossi", "patel", "jones", "sato", "silva",
    "berg", "haddad", "nair", "wagner", "martin", "lopez", "kim", "petrov", "costa", "mensah",
)  # fmt: skip
DOMAINS = ("acme.io", "gmail.com", "northwind.com", "globex.co", "initech.dev", "outlook.com")
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
NS = 1_000_000_000


class Model(NamedTuple):
    """A model as the instrumentations name it, and how fast it answers."""

    provider: str  # gen_ai.provider.name
    name: str  # gen_ai.request.model
    response: str  # gen_ai.response.model: what the API answers
    tokens_per_second: float
    first_token_seconds: float


MODELS = {
    m.name: m
    for m in (
        Model("openai", "gpt-4o", "gpt-4o-2024-08-06", 75.0, 0.5),
        Model("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", 95.0, 0.4),
        Model("anthropic", "claude-3-5-sonnet-20241022", "claude-3-5-sonnet-20241022", 60.0, 0.9),
        Model("anthropic", "claude-3-5-haiku-20241022", "claude-3-5-haiku-20241022", 70.0, 0.7),
        Model("gcp.gemini", "gemini-2.0-flash", "gemini-2.0-flash-001", 170.0, 0.35),
        Model("openai", "text-embedding-3-small", "text-embedding-3-small", 0.0, 0.15),
    )
}
HOSTS = {
    "openai": "api.openai.com",
    "anthropic": "api.anthropic.com",
    "gcp.gemini": "generativelanguage.googleapis.com",
}
# gen_ai.system as OpenLLMetry writes it, and its instrumentation's name.
TRACELOOP_SYSTEMS = {"openai": ("openai", "openai"), "anthropic": ("Anthropic", "anthropic")}
# plan -> ((model key, weight), ...) for each use.
CHAT_MODELS = {
    "free": (("gpt-4o-mini", 6), ("claude-3-5-haiku-20241022", 2), ("gemini-2.0-flash", 2)),
    "pro": (("gpt-4o", 4), ("gpt-4o-mini", 3), ("claude-3-5-sonnet-20241022", 3)),
    "enterprise": (("claude-3-5-sonnet-20241022", 5), ("gpt-4o", 4), ("gpt-4o-mini", 1)),
}
SUMMARY_MODELS = {
    "free": (("gpt-4o-mini", 1), ("claude-3-5-haiku-20241022", 1)),
    "pro": (("claude-3-5-haiku-20241022", 1), ("claude-3-5-sonnet-20241022", 1)),
    "enterprise": (("claude-3-5-sonnet-20241022", 3), ("gpt-4o", 1)),
}
AGENT_MODELS = {
    "free": (("gpt-4o-mini", 1),),
    "pro": (("gpt-4o", 1), ("claude-3-5-sonnet-20241022", 1)),
    "enterprise": (("gpt-4o", 1), ("claude-3-5-sonnet-20241022", 2)),
}
# provider -> ((error.type, weight, typical seconds until it is raised), ...)
ERRORS = {
    "openai": (("RateLimitError", 5, 0.3), ("InternalServerError", 3, 2.0), ("APITimeoutError", 1, 60.0)),
    "anthropic": (("OverloadedError", 5, 1.5), ("RateLimitError", 4, 0.3), ("APITimeoutError", 1, 60.0)),
    "gcp.gemini": (
        ("ResourceExhausted", 6, 0.3),
        ("ServiceUnavailable", 3, 1.0),
        ("DeadlineExceeded", 1, 60.0),
    ),
}


@dataclass(frozen=True)
class UserTruth:
    """What the demo sent for one user."""

    user_id: str
    plan: str
    requests: int  # LLM calls
    errors: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    spans: int  # every span of the user's traces, LLM calls or not


@dataclass(frozen=True)
class Profile:
    user_id: str
    plan: str
    tz_hours: float
    weight: float  # relative activity per day
    start_ns: int  # first possible activity


@dataclass(frozen=True)
class Call:
    """One LLM call; times are relative to its trace's start."""

    offset_ns: int
    duration_ns: int
    model: Model
    operation: str  # chat or embeddings
    input_tokens: int | None  # None: the call failed before usage was reported
    output_tokens: int | None  # None too for embeddings
    cache_read_tokens: int | None = None
    finish_reason: str = "stop"
    error_type: str | None = None


@dataclass(frozen=True)
class Tool:
    name: str
    offset_ns: int
    duration_ns: int


@dataclass(frozen=True)
class Trace:
    """One request of the application: its kind decides which spans and dialect it is sent as."""

    kind: str  # one of FEATURES
    user: Profile
    session_id: str
    start_ns: int  # relative to the session's start until the session is placed in time
    duration_ns: int
    calls: tuple[Call, ...]
    tools: tuple[Tool, ...] = ()

    @property
    def span_count(self) -> int:
        return len(self.calls) + len(self.tools) + (0 if self.kind == "chat" else 1)
