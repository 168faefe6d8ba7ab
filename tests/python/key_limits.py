"""The official OpenAI Python client against a virtual key's limits.

Run by tests/tests/keys.rs with ROUTER_BASE_URL (the router's /v1) and
three keys: KEY_RPM (1 request a minute), KEY_TPM (2 tokens a minute) and
KEY_BUDGET (a budget one call of the powerful tier spends). Each limit
must reach the client as its own `RateLimitError`, with OpenAI's error
code and headers. Prints one line per check and ends with
"N passed, 0 failed"; exits non-zero on the first failure.
"""

import os
import sys

import openai

BASE = os.environ["ROUTER_BASE_URL"]
passed = 0


def check(name, cond, detail=""):
    global passed
    if not cond:
        print(f"FAILED {name}: {detail}")
        print(f"{passed} passed, 1 failed")
        sys.exit(1)
    passed += 1
    print(f"ok {name}")


def refused(key, model, times):
    """Calls `times` times; the error of the last call, if any."""
    client = openai.OpenAI(base_url=BASE, api_key=key, max_retries=0, timeout=20)
    error = None
    for _ in range(times):
        try:
            client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "a b c d"}]
            )
            error = None
        except openai.RateLimitError as e:
            error = e
    return error


e = refused(os.environ["KEY_RPM"], "auto", 2)
check(
    "requests per minute",
    e is not None
    and e.status_code == 429
    and e.code == "rate_limit_exceeded"
    and e.response.headers.get("x-ratelimit-limit-requests") == "1"
    and e.response.headers.get("x-ratelimit-remaining-requests") == "0"
    and int(e.response.headers.get("retry-after", "0")) >= 1,
    e and (e.code, dict(e.response.headers)),
)

e = refused(os.environ["KEY_TPM"], "auto", 2)
check(
    "tokens per minute",
    e is not None
    and e.code == "rate_limit_exceeded"
    and e.response.headers.get("x-ratelimit-limit-tokens") == "2"
    and e.response.headers.get("x-ratelimit-remaining-tokens") == "0",
    e and (e.code, dict(e.response.headers)),
)

e = refused(os.environ["KEY_BUDGET"], "powerful", 2)
check(
    "budget",
    e is not None
    and e.code == "budget_exceeded"
    and e.type == "insufficient_quota"
    and float(e.response.headers.get("x-router-budget-remaining-usd")) == 0.0,
    e and (e.code, e.type, dict(e.response.headers)),
)

print(f"{passed} passed, 0 failed")
