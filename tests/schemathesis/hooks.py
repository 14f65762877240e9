"""schemathesis hooks of `make api-test` (run.py loads them through SCHEMATHESIS_HOOKS)."""

import os

import schemathesis

# The accounts the run authenticates as. schemathesis reuses names it has seen (the caller's
# own, from `GET /users/me` or from the token), and revoking one of them would turn the rest
# of the run into 401s.
PROTECTED = set(filter(None, os.environ.get("API_TEST_PROTECTED_USERS", "").split(",")))
# `/users/me` is a route of its own, documented apart: `me` as `/users/{username}` reaches it
# (GET answers there), which is not what the document says of `/users/{username}`.
SHADOWED = {"me"}
# A user run.py creates, to be revoked instead.
STAND_IN = "ada"


@schemathesis.hook
def before_call(context, case, kwargs):
    """Sends `/users/{username}` requests for the run's own accounts, or for `me`, to `ada`."""
    username = (case.path_parameters or {}).get("username")
    if username in PROTECTED or username in SHADOWED:
        case.path_parameters["username"] = STAND_IN
