"""A tablet written against a client that openapi-python-client generated from the
checked-in spec (a generator the project does not use for its own tablets), run against a
real node by tests/tests/python_client.rs. Every answer is read through the generated,
typed models: a spec that lies about a body or a status fails here.

Environment: EQ_BASE_URL, EQ_ADMIN_TOKEN, EQ_OPERATOR_TOKEN (subject EQ_OPERATOR_SUBJECT,
scope EQ_SITE/EQ_LINE), EQ_SITE, EQ_LINE. The generated package is on PYTHONPATH.
"""

import os
import time
import uuid

from equipment_live_client import AuthenticatedClient
from equipment_live_client.api.access import list_revocations, revoke_tokens
from equipment_live_client.api.equipment import (
    get_equipment,
    register_equipment,
    update_equipment,
)
from equipment_live_client.api.history import get_history
from equipment_live_client.api.status import set_status
from equipment_live_client.models import (
    EquipmentView,
    HistoryPage,
    Problem,
    RegisterEquipment,
    RevocationKind,
    RevocationView,
    RevokeTokens,
    SetStatus,
    Status,
    UpdateEquipment,
)

BASE = os.environ["EQ_BASE_URL"]
SITE = os.environ["EQ_SITE"]
LINE = os.environ["EQ_LINE"]
OPERATOR = os.environ["EQ_OPERATOR_SUBJECT"]

admin = AuthenticatedClient(base_url=BASE, token=os.environ["EQ_ADMIN_TOKEN"])
operator = AuthenticatedClient(base_url=BASE, token=os.environ["EQ_OPERATOR_TOKEN"])
forged = AuthenticatedClient(base_url=BASE, token="eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl")


def problem(answer, status, code):
    assert answer.status_code == status, (answer.status_code, answer.content)
    assert isinstance(answer.parsed, Problem), answer.parsed
    assert answer.parsed.code == code, answer.parsed
    assert answer.parsed.status == status


machine = f"py-press-{uuid.uuid4().hex[:8]}"

# Register (admin), read it back.
answer = register_equipment.sync_detailed(
    client=admin,
    body=RegisterEquipment(id=machine, name="Press (Python)", site=SITE, line=LINE),
)
assert answer.status_code == 201, (answer.status_code, answer.content)
assert isinstance(answer.parsed, EquipmentView)
assert answer.parsed.version == 1 and answer.parsed.status == Status.YELLOW
assert answer.headers["etag"] == '"1"'

# The operator sets it red, based on version 1, with an idempotency key; a retry with the
# same key gets the same answer and writes nothing more.
key = str(uuid.uuid4())
for attempt in range(2):
    answer = set_status.sync_detailed(
        machine,
        client=operator,
        body=SetStatus(status=Status.RED, reason="jam"),
        if_match='"1"',
        idempotency_key=key,
    )
    assert answer.status_code == 200, (answer.status_code, answer.content)
    view = answer.parsed
    assert isinstance(view, EquipmentView)
    assert (view.version, view.status, view.reason) == (2, Status.RED, "jam")
    assert view.updated_by == OPERATOR, view.updated_by
    assert (answer.headers.get("idempotent-replayed") == "true") == (attempt == 1)

# A change based on an old version is refused (412), with a typed problem.
answer = set_status.sync_detailed(
    machine,
    client=operator,
    body=SetStatus(status=Status.GREEN),
    if_match='"1"',
    idempotency_key=str(uuid.uuid4()),
)
problem(answer, 412, "version_mismatch")

# An operator may not register; a forged token is not a token.
answer = register_equipment.sync_detailed(
    client=operator,
    body=RegisterEquipment(id=f"{machine}-x", name="X", site=SITE, line=LINE),
)
problem(answer, 403, "role_forbidden")
problem(get_equipment.sync_detailed(machine, client=forged), 401, "token_bad_signature")

# A rename; an update that sets nothing changes nothing.
answer = update_equipment.sync_detailed(
    machine, client=admin, body=UpdateEquipment(name="Press 7 (rebuilt)")
)
assert answer.status_code == 200 and answer.parsed.version == 3, answer.content
answer = update_equipment.sync_detailed(machine, client=admin, body=UpdateEquipment())
assert answer.status_code == 200 and answer.parsed.version == 3, answer.content
assert answer.parsed.name == "Press 7 (rebuilt)"

# The history, once the consumer has written it: every version once, in order.
deadline = time.monotonic() + 30
while True:
    answer = get_history.sync_detailed(machine, client=operator)
    assert answer.status_code == 200, (answer.status_code, answer.content)
    assert isinstance(answer.parsed, HistoryPage)
    versions = [entry.version for entry in answer.parsed.items]
    if len(versions) >= 3 or time.monotonic() > deadline:
        break
    time.sleep(0.2)
assert versions == [1, 2, 3], versions
red = answer.parsed.items[1]
assert (red.status, red.previous_status, red.updated_by) == (Status.RED, Status.YELLOW, OPERATOR)

# The tablet is lost: the admin revokes its subject, and its token stops working.
answer = revoke_tokens.sync_detailed(
    client=admin,
    body=RevokeTokens(kind=RevocationKind.SUBJECT, value=OPERATOR, reason="tablet lost"),
)
assert answer.status_code == 201, (answer.status_code, answer.content)
assert isinstance(answer.parsed, RevocationView) and answer.parsed.value == OPERATOR
listed = list_revocations.sync_detailed(client=admin).parsed
assert [r.id for r in listed.revocations] == [answer.parsed.id]
problem(get_equipment.sync_detailed(machine, client=operator), 401, "token_revoked")

print("python client: ok")
